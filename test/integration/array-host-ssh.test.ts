import { SshExec } from '../../src/drivers/array-host/ssh-exec.js';
import { silentLogger } from '../../src/log.js';
import { PrivateSshd } from '../helpers/sshd.js';

describe('smoke', () => {
  let sshd: PrivateSshd;
  let ssh: SshExec;
  beforeAll(async () => {
    sshd = await PrivateSshd.start();
    ssh = new SshExec({ host: sshd.host, port: sshd.port, username: 'root', privateKeyPath: sshd.privateKeyPath, hostKeySha256: sshd.hostKeySha256, connectTimeoutMs: 3000 }, silentLogger(), 5000);
  });
  afterAll(async () => { await ssh?.close(); await sshd?.stop(); });
  it('runs', async () => {
    const t = performance.now();
    console.log(await ssh.run(['printf', '%s', "a b'c$d;e"]));
    console.log(performance.now() - t);
    const t2 = performance.now();
    for (let i = 0; i < 20; i++) await ssh.run(['true']);
    console.log('per op', (performance.now() - t2) / 20);
    console.log(await ssh.run(['sh', '-c', 'echo $PPID; cat /proc/$PPID/cmdline | tr "\\0" " "; echo; cat /proc/$$/cmdline | tr "\\0" " "']));
  });
});
