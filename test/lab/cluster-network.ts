import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { describeResult, runCommand } from './command.js';

// The network of a lab cluster (cluster.ts): one network namespace per host
// (`ip netns add bt-<pid>-<id>-hN`), one end of a veth pair in it as eth0, the other end on a
// bridge `btbr<id>` that only these namespaces use, addresses 10.250.X.N/24. The bridge has no
// address: traffic flows only among the namespaces.

/** Runs a command that must succeed (network setup); throws with its output otherwise. */
async function must(argv: string[], timeoutMs = 15_000): Promise<string> {
  const result = await runCommand(argv, { timeoutMs });
  if (result.code !== 0) throw new Error(`command failed:\n${describeResult(result)}`);
  return result.stdout;
}

export class ClusterNetwork {
  readonly id = randomBytes(3).toString('hex');
  readonly bridge = `btbr${this.id}`;
  /** The first three octets of the hosts' /24, e.g. "10.250.37". */
  readonly subnet = `10.250.${20 + (process.pid % 200)}`;
  private readonly netnsCreated: string[] = [];
  private readonly vethsCreated: string[] = [];
  private bridgeCreated = false;
  private forwardRule?: string[];

  /** `names`: the hosts, h1..hN, addressed .1 to .N in that order. */
  constructor(readonly names: string[]) {}

  /** A host's address on the cluster network. */
  addressOf(name: string): string {
    return `${this.subnet}.${this.names.indexOf(name) + 1}`;
  }

  netnsOf(name: string): string {
    return `bt-${process.pid}-${this.id}-${name}`;
  }

  private vethOf(name: string): string {
    return `bt${this.id}${name}`; // at most 15 characters
  }

  /** Creates the bridge, and each host's namespace with its veth pair and address. */
  async create(): Promise<void> {
    await must(['ip', 'link', 'add', this.bridge, 'type', 'bridge']);
    this.bridgeCreated = true;
    await must(['ip', 'link', 'set', this.bridge, 'up']);
    for (const name of this.names) {
      const ns = this.netnsOf(name);
      const veth = this.vethOf(name);
      await must(['ip', 'netns', 'add', ns]);
      this.netnsCreated.push(ns);
      await must(['ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}p`]);
      this.vethsCreated.push(veth);
      await must(['ip', 'link', 'set', `${veth}p`, 'netns', ns]);
      await must(['ip', '-n', ns, 'link', 'set', `${veth}p`, 'name', 'eth0']);
      await must(['ip', '-n', ns, 'addr', 'add', `${this.addressOf(name)}/24`, 'dev', 'eth0']);
      await must(['ip', '-n', ns, 'link', 'set', 'eth0', 'up']);
      await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
      await must(['ip', 'link', 'set', veth, 'master', this.bridge]);
      await must(['ip', 'link', 'set', veth, 'up']);
    }
    // A FORWARD policy of DROP (any dockerd with iptables sets it) also drops bridged traffic
    // when br_netfilter is active: accept this bridge's own traffic, and only that.
    const forward = await runCommand(['iptables', '-S', 'FORWARD'], { timeoutMs: 15_000 });
    if (forward.code === 0 && /^-P FORWARD DROP/m.test(forward.stdout)) {
      const rule = ['FORWARD', '-i', this.bridge, '-o', this.bridge, '-j', 'ACCEPT'];
      await must(['iptables', '-I', ...rule]);
      this.forwardRule = rule;
    }
  }

  /** Every host reaches every other over the cluster network (busybox ping, bounded). */
  async check(): Promise<void> {
    if (this.names.length < 2) return;
    const checks = this.names.map((name, i) => {
      const peer = this.names[(i + 1) % this.names.length]!;
      return runCommand(['nsenter', `--net=/run/netns/${this.netnsOf(name)}`, 'busybox', 'ping', '-c', '1', '-W', '3', this.addressOf(peer)], {
        timeoutMs: 10_000,
      }).then((r) => (r.code === 0 ? '' : `${name} -> ${peer}: ${describeResult(r)}`));
    });
    const failures = (await Promise.all(checks)).filter(Boolean);
    if (failures.length) throw new Error(`the cluster network does not work:\n${failures.join('\n')}`);
  }

  /** Deletes the iptables rule, veths, bridge and network namespaces this made, and only those. */
  async remove(errors: string[]): Promise<void> {
    const attempt = async (argv: string[]) => {
      const r = await runCommand(argv, { timeoutMs: 15_000 });
      if (r.code !== 0) errors.push(`${argv.join(' ')}: ${r.stderr.trim()}`);
    };
    if (this.forwardRule) {
      await attempt(['iptables', '-D', ...this.forwardRule]);
      this.forwardRule = undefined;
    }
    const links = await this.linkNames();
    for (const veth of this.vethsCreated.splice(0)) if (links.has(veth)) await attempt(['ip', 'link', 'del', veth]);
    if (this.bridgeCreated && links.has(this.bridge)) await attempt(['ip', 'link', 'del', this.bridge]);
    this.bridgeCreated = false;
    for (const ns of this.netnsCreated.splice(0)) if (existsSync(`/run/netns/${ns}`)) await attempt(['ip', 'netns', 'del', ns]);
  }

  private async linkNames(): Promise<Set<string>> {
    const r = await runCommand(['ip', '-o', 'link', 'show'], { timeoutMs: 15_000 });
    return new Set(
      r.stdout
        .split('\n')
        .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1])
        .filter((n): n is string => !!n),
    );
  }
}
