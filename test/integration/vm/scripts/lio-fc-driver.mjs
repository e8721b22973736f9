// LioDriver's FC exports on a real LIO configfs (tcm_fc loaded; no fabric needed for the
// configuration): two "hosts" as two driver instances on one pool, like two daemons.
// Prints RESULT lines; argv[2] is the pool directory.
const src = process.env.BALLAST_SRC;
const { LioDriver } = await import(`${src}/dist/drivers/lio/lio-driver.js`);
const { CommandRunner } = await import(`${src}/dist/exec.js`);
const { silentLogger } = await import(`${src}/dist/log.js`);
const { readdirSync, existsSync } = await import('node:fs');

const pool = process.argv[2];
const T = '/sys/kernel/config/target';
const ports = ['2000525400000101', '2000525400000102'];
const backend = { array: {}, pool, transport: 'fc', fc: { target_wwpns: ports }, multipath: true, reservations: true };
const log = silentLogger();
const driver = () => new LioDriver(pool, backend, 'fc', { exec: new CommandRunner(log, 10_000) }, 10_000, log);
const hostA = { hostId: 'a', wwpns: ['2000525400000201', '2000525400000202'] };
const hostB = { hostId: 'b', wwpns: ['2000525400000301'] };
const result = (pairs) => console.error(`RESULT ${Object.entries(pairs).map(([k, v]) => `${k}=${v}`).join(' ')}`);
const colons = (w) => w.match(/../g).join(':');
const ls = (p) => (existsSync(p) ? readdirSync(p) : []);
const tpg = (port) => `${T}/fc/${colons(port)}/tpgt_1`;
const vol = (name) => ({ name, profile: 'fc', sizeBytes: 64 << 20, fstype: 'ext4', mkfsOpts: [], mountOpts: [], readonly: false });

const [d1, d2] = [driver(), driver()];
// Two daemons create the same name at once: exactly one wins.
const created = await Promise.allSettled([d1.create(vol('f1')), d2.create(vol('f1'))]);
result({ fc_create_winners: created.filter((c) => c.status === 'fulfilled').length, fc_create_loser: created.find((c) => c.status === 'rejected')?.reason?.constructor?.name });
await d1.create(vol('f2'));

const e1 = await d1.export('f1', hostA);
const e2 = await d2.export('f2', hostA);
result({ fc_lun_f1: e1.lun, fc_lun_f2: e2.lun, fc_targets: e1.targetWwpns.join(',') });
result({ fc_port_luns: ports.map((p) => ls(`${tpg(p)}/lun`).sort().join('+')).join(','), fc_acl_a: ls(`${tpg(ports[0])}/acls/${colons(hostA.wwpns[0])}`).filter((e) => e.startsWith('lun_')).sort().join('+') });

// Host B takes f1 over: A loses the mapping, B gets it, at the same LUN.
const taken = await d2.export('f1', hostB);
result({
  fc_takeover_lun: taken.lun,
  fc_a_maps_f1_after: ls(`${tpg(ports[0])}/acls/${colons(hostA.wwpns[0])}`).includes(`lun_${e1.lun}`) ? 'yes' : 'no',
  fc_b_maps_f1: ports.every((p) => ls(`${tpg(p)}/acls/${colons(hostB.wwpns[0])}`).includes(`lun_${e1.lun}`)) ? 'yes' : 'no',
});
// A restarted daemon (a new instance) exporting again reconciles: same LUN, nothing added.
const again = await driver().export('f1', hostB);
result({ fc_restart_lun: again.lun, fc_luns_after_restart: ls(`${tpg(ports[0])}/lun`).length, fc_objects_after_restart: ls(`${T}/core/fileio_0`).filter((e) => e.startsWith('ballast-')).length });

// Unexport by its last holder removes the LUN from every port and the storage object.
await d2.unexport('f1', hostB);
result({ fc_luns_after_unexport: ports.map((p) => ls(`${tpg(p)}/lun`).length).join(','), fc_objects_after_unexport: ls(`${T}/core/fileio_0`).filter((e) => e.startsWith('ballast-')).length });
// Destroy of an exported volume withdraws it first.
await d1.destroy('f2');
await d1.destroy('f1');
result({ fc_luns_after_destroy: ports.map((p) => ls(`${tpg(p)}/lun`).length).join(','), fc_objects_after_destroy: ls(`${T}/core/fileio_0`).filter((e) => e.startsWith('ballast-')).length, fc_pool_after_destroy: ls(pool).filter((e) => !e.startsWith('.')).length });
// An export to a host without FC ports is refused with a clear error.
await d1.create(vol('f3'));
const refused = await d1.export('f3', { hostId: 'c' }).then(() => 'exported', (err) => err.message);
result({ fc_no_wwpn_error: JSON.stringify(refused).replace(/ /g, '_') });
await d1.destroy('f3');
