// ballast's reservation fence against LIO, from two initiators (argv: the two hosts' disks of one
// LUN): host 1 takes it, host 2 takes it over. Prints RESULT lines; the log goes to argv[4].
const src = process.env.BALLAST_SRC;
const { ScsiReservations, reservationKey } = await import(`${src}/dist/attach/iscsi/reservations.js`);
const { CommandRunner } = await import(`${src}/dist/exec.js`);
const { createLogger } = await import(`${src}/dist/log.js`);

const [, , disk1, disk2, logFile] = process.argv;
const log = createLogger('debug', logFile);
const pr = new ScsiReservations(new CommandRunner(log, 20_000), log, 20_000);
const result = (pairs) => console.error(`RESULT ${Object.entries(pairs).map(([k, v]) => `${k}=${v}`).join(' ')}`);

const key1 = reservationKey('host1', 1);
const key2 = reservationKey('host2', 2);
await pr.take([disk1], key1);
result({ pr_holder_1: (await pr.holder(`/dev/${disk1}`)) === key1 ? 'host1' : 'other' });
const { preempted } = await pr.take([disk2], key2);
result({
  pr_preempted: preempted.join(','),
  pr_key1: key1,
  pr_holder_2: (await pr.holder(`/dev/${disk2}`)) === key2 ? 'host2' : 'other',
  pr_keys_after: (await pr.keys(`/dev/${disk2}`)).join(','),
});
