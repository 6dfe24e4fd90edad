# The client pod of test/k8s/node.test.ts: real NFS (libnfs nfs-cp/nfs-ls) and SMB (smbclient)
# clients, on the same base as the DittoFS images (hack/k8s/images.sh builds it with buildah).
ARG NODE_IMAGE=node:20.20.2-bookworm-slim
FROM ${NODE_IMAGE}
RUN apt-get update \
  && apt-get install -y --no-install-recommends libnfs-utils smbclient \
  && rm -rf /var/lib/apt/lists/*
# Stays up until the test deletes it; the test runs the clients with kubectl exec.
CMD ["sleep", "infinity"]
