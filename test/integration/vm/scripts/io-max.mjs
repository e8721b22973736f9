// node io-max.mjs PID DEVICE LIMITS_JSON: ballast's own throttle (dist/attach/io-throttle.js) for
// the cgroup of PID on cgroup v2 mounted at $CGROUP2, as the IO-limit enforcer applies it to a
// container; prints the io.max line the kernel then shows.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const [pid, device, limits] = process.argv.slice(2);
const { ioCgroupOf, throttle } = await import(`${process.env.BALLAST_SRC}/dist/attach/io-throttle.js`);
const cgroup = await ioCgroupOf(Number(pid), { proc: '/proc', cgroup: process.env.CGROUP2 });
if (cgroup.version !== 2) throw new Error(`expected cgroup v2, found ${JSON.stringify(cgroup)}`);
await throttle(cgroup, device, JSON.parse(limits));
process.stdout.write((await readFile(join(cgroup.dir, 'io.max'), 'utf8')).trim());
