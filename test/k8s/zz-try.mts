import { startKubeControlPlane } from '../helpers/k8s.js';
import { execFileSync } from 'node:child_process';
const t0 = Date.now();
const cp = await startKubeControlPlane({ node: true, keepDir: true });
console.log('up in', Date.now() - t0, cp.dir, cp.node);
console.log(execFileSync(cp.kubectl, ['get', 'nodes', '-o', 'wide'], { env: cp.env, encoding: 'utf8' }));
execFileSync(cp.kubectl, ['run', 'p1', '--image=registry.k8s.io/pause:3.10', '--image-pull-policy=Never'], { env: cp.env, encoding: 'utf8' });
try { console.log(execFileSync(cp.kubectl, ['wait', '--for=condition=Ready', 'pod/p1', '--timeout=90s'], { env: cp.env, encoding: 'utf8' })); } catch (e) { console.log(String(e)); }
console.log(execFileSync(cp.kubectl, ['get', 'pods', '-o', 'wide', '-A'], { env: cp.env, encoding: 'utf8' }));
console.log(execFileSync(cp.kubectl, ['describe', 'pod', 'p1'], { env: cp.env, encoding: 'utf8' }).split('\n').slice(-15).join('\n'));
await cp.stop();
console.log('stopped', Date.now() - t0);
