// LD_PRELOAD shim for the crash tests (support.ts builds it with gcc and sets LD_PRELOAD): makes
// the files of the embedded metadata store (SQLite: the database, its -wal, -shm, -journal) behave
// as if the disk's cache were volatile, so that a SIGKILL of the server acts on them as a power cut
// would. SQLite writes with pwrite and syncs with fsync from C, and Node's fs.fdatasync (the
// driver's sync of the -wal) reaches libc's fdatasync through libuv: interposing fsync and
// fdatasync sees every sync of these files (SQLite calls neither msync nor sync_file_range on them).
//
// Marked files: those whose name starts with DITTOFS_TEST_VOLATILE_META (e.g. `metadata.sqlite`).
// The shim records, beside each marked file F, what a power cut would leave of it; after a kill,
// support.ts (restoreVolatileMeta) puts that in place of the files themselves:
// - F.vm-snap: F's content when its last completed fsync/fdatasync began. At each sync the whole
//   file is copied to F.vm-snap.<n>.tmp before the real call starts (so everything copied was
//   written before the sync began, and is covered by it), and renamed to F.vm-snap only once the
//   real call has returned 0, unless a sync that began later has already been promoted. A kill
//   during the copy or the real call leaves the previous snapshot: what that sync was making
//   durable is counted as lost, which a power cut may do.
// - F.vm-entry: F's directory entry is durable: a sync of its directory, begun while F existed,
//   has returned. A file without one is removed at the restore (its creation was never made
//   durable); a file with one but no snapshot is restored empty. A name whose file is gone when a
//   sync of the directory begins loses both (its removal is durable from then on); until then a
//   removed file comes back from its snapshot, as an unlink not yet synced may after a power cut.
// Only the names are kept in these files, no other state: each sync is independent of the rest.
// Other files and directories (the block store, DittoFS's own WAL) pass straight through.
// Thread-safe: syncs come from libuv's pool, the main thread and the checkpoint worker at once.
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SNAP ".vm-snap"
#define ENTRY ".vm-entry"
#define MAX_TRACKED 64
#define MAX_NAMES 64

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static const char *prefix;
static size_t prefix_len;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t next_seq;
// The sequence number of the latest snapshot promoted, per file path.
static struct {
  char path[PATH_MAX];
  uint64_t seq;
} promoted[MAX_TRACKED];

static void init(void) {
  real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  prefix = getenv("DITTOFS_TEST_VOLATILE_META");
  if (prefix != NULL && prefix[0] == '\0') prefix = NULL;
  prefix_len = prefix ? strlen(prefix) : 0;
}

static void die(const char *what, const char *p) {
  // The simulation cannot vouch for anything any more: stop loudly rather than test nothing.
  fprintf(stderr, "volatile-meta: %s %s: %s\n", what, p, strerror(errno));
  abort();
}

/** snprintf into a path buffer; a path too long for it stops the process. */
#define PATHF(buf, ...)                                                               \
  do {                                                                                \
    int len_ = snprintf(buf, sizeof buf, __VA_ARGS__);                                \
    if (len_ < 0 || (size_t)len_ >= sizeof buf) die("path too long", buf);            \
  } while (0)

/** A marked name: starts with the prefix and is none of the shim's own files. */
static int marked_name(const char *name) {
  return strncmp(name, prefix, prefix_len) == 0 && strstr(name, SNAP) == NULL && strstr(name, ENTRY) == NULL;
}

/** Copies the whole content of fd (path p, for a descriptor opened write-only) to dst. */
static int copy_file(int fd, const char *p, const char *dst) {
  int src = fd;
  char buf[1 << 16];
  ssize_t n = pread(fd, buf, 0, 0);
  if (n < 0) {
    src = open(p, O_RDONLY | O_CLOEXEC);
    if (src < 0) return -1;
  }
  int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    if (src != fd) close(src);
    return -1;
  }
  off_t off = 0;
  int rc = 0;
  for (;;) {
    n = pread(src, buf, sizeof buf, off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      rc = n < 0 ? -1 : 0;
      break;
    }
    for (ssize_t done = 0; done < n;) {
      ssize_t w = write(out, buf + done, (size_t)(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        rc = -1;
        break;
      }
      done += w;
    }
    if (rc != 0) break;
    off += n;
  }
  if (src != fd) close(src);
  if (close(out) != 0) rc = -1;
  return rc;
}


/** A sync of a marked regular file: snapshot, real call, promote. */
static int sync_file(int fd, const char *p, int (*real)(int)) {
  pthread_mutex_lock(&lock);
  uint64_t seq = ++next_seq;
  pthread_mutex_unlock(&lock);
  char tmp[PATH_MAX + 64];
  PATHF(tmp, "%s" SNAP ".%llu.tmp", p, (unsigned long long)seq);
  int saved = errno;
  if (copy_file(fd, p, tmp) != 0) die("snapshot", p);
  errno = saved;
  int rc = real(fd);
  saved = errno;
  if (rc != 0) {
    unlink(tmp);
    errno = saved;
    return rc;
  }
  char snap[PATH_MAX + 16];
  PATHF(snap, "%s" SNAP, p);
  pthread_mutex_lock(&lock);
  int slot = -1;
  for (int i = 0; i < MAX_TRACKED; i++) {
    if (strcmp(promoted[i].path, p) == 0) {
      slot = i;
      break;
    }
    if (slot < 0 && promoted[i].path[0] == '\0') slot = i;
  }
  if (slot < 0) die("too many files", p);
  if (promoted[slot].path[0] == '\0') snprintf(promoted[slot].path, PATH_MAX, "%s", p);
  if (seq > promoted[slot].seq) {
    if (rename(tmp, snap) != 0) die("promote", snap);
    promoted[slot].seq = seq;
  } else {
    unlink(tmp);
  }
  pthread_mutex_unlock(&lock);
  errno = saved;
  return rc;
}

/** Marked names in directory p (at most MAX_NAMES), entries included when `entries`. */
static int list(const char *p, char names[][NAME_MAX + 1], int entries) {
  DIR *d = opendir(p);
  if (d == NULL) return 0;
  int n = 0;
  size_t elen = strlen(ENTRY);
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n < MAX_NAMES) {
    size_t len = strlen(e->d_name);
    if (entries) {
      if (len > elen && strcmp(e->d_name + len - elen, ENTRY) == 0 && strncmp(e->d_name, prefix, prefix_len) == 0) {
        snprintf(names[n++], NAME_MAX + 1, "%.*s", (int)(len - elen), e->d_name);
      }
    } else if (marked_name(e->d_name)) {
      snprintf(names[n++], NAME_MAX + 1, "%s", e->d_name);
    }
  }
  closedir(d);
  return n;
}

/** A sync of a directory holding marked files: their entries (and removals) become durable. */
static int sync_dir(int fd, const char *p, int (*real)(int)) {
  static char before[MAX_NAMES][NAME_MAX + 1];
  static char had[MAX_NAMES][NAME_MAX + 1];
  char path[PATH_MAX + NAME_MAX + 32];
  int saved = errno;
  // One directory sync at a time (they are rare): the name lists are shared.
  pthread_mutex_lock(&lock);
  int n = list(p, before, 0);
  int m = list(p, had, 1);
  errno = saved;
  int rc = real(fd);
  saved = errno;
  if (rc == 0) {
    for (int i = 0; i < n; i++) {
      PATHF(path, "%s/%s" ENTRY, p, before[i]);
      int e = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (e < 0) die("entry", path);
      close(e);
    }
    for (int j = 0; j < m; j++) {
      int present = 0;
      for (int i = 0; i < n && !present; i++) present = strcmp(before[i], had[j]) == 0;
      if (present) continue;
      PATHF(path, "%s/%s" ENTRY, p, had[j]);
      unlink(path);
      PATHF(path, "%s/%s" SNAP, p, had[j]);
      unlink(path);
    }
  }
  pthread_mutex_unlock(&lock);
  errno = saved;
  return rc;
}

static int intercept(int fd, int (*real)(int)) {
  if (prefix == NULL) return real(fd);
  char link[64];
  char p[PATH_MAX];
  PATHF(link, "/proc/self/fd/%d", fd);
  int saved = errno;
  ssize_t len = readlink(link, p, sizeof p - 1);
  struct stat st;
  if (len <= 0 || fstat(fd, &st) != 0) {
    errno = saved;
    return real(fd);
  }
  p[len] = '\0';
  errno = saved;
  if (S_ISDIR(st.st_mode)) {
    // Only a directory that holds the store's files (the database's name exactly).
    char db[PATH_MAX + NAME_MAX + 2];
    struct stat dst;
    PATHF(db, "%s/%s", p, prefix);
    int has = stat(db, &dst) == 0;
    errno = saved;
    return has ? sync_dir(fd, p, real) : real(fd);
  }
  const char *base = strrchr(p, '/');
  base = base ? base + 1 : p;
  if (!S_ISREG(st.st_mode) || !marked_name(base)) return real(fd);
  return sync_file(fd, p, real);
}

int fsync(int fd) {
  pthread_once(&once, init);
  return intercept(fd, real_fsync);
}

int fdatasync(int fd) {
  pthread_once(&once, init);
  return intercept(fd, real_fdatasync);
}
