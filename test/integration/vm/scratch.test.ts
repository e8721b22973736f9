import { runInVm, requireVmLab } from '../../helpers/vm.js';
it('boots', async () => {
  requireVmLab();
  const r = await runInVm({ name: 'scratch', timeoutMs: 120_000, script: `
set -x
uname -r; cat /proc/uptime; mount | head -30; ls /sys/class/net; lsmod | head -40
time node -e 0
time node -e 0
time node /work/main/dist/cli/main.js --help >/dev/null
cat /proc/uptime
` });
  console.log(r.console, r.exitCode, r.timedOut, r.durationMs);
}, 150_000);
