import { CommandFailed } from '../../errors.js';
import type { Exec } from '../../exec.js';

/** LIO's configuration tree on the array host. */
export const TARGET_ROOT = '/sys/kernel/config/target';

/** A LUN of a target portal group and the ACLs' mapped LUNs, as configfs links show them. */
export interface LioTpg {
  /** TPG LUN number -> the storage object it serves ("fileio_0/NAME"). */
  luns: Map<number, string>;
  /** Initiator name (WWPN as 16 hex digits, or IQN) -> mapped LUN number -> TPG LUN number. */
  acls: Map<string, Map<number, number>>;
  /** Network portals ("192.0.2.5:3260"), iSCSI only. */
  portals: string[];
}

export interface LioState {
  /** "fileio_0/NAME" -> the file or block device it serves, and whether it is enabled. */
  storageObjects: Map<string, { path: string; enabled: boolean }>;
  /** FC target port WWPN (16 hex digits) -> its TPG (tcm_fc has exactly one, tpgt_1). */
  fc: Map<string, LioTpg>;
  /** iSCSI target IQN -> its TPG 1. */
  iscsi: Map<string, LioTpg>;
}

/** "20:00:52:54:00:00:01:01" <-> "2000525400000101": configfs names FC ports with colons. */
export const wwpnToConfigfs = (wwpn: string) => wwpn.match(/../g)!.join(':');
const wwpnFromConfigfs = (name: string) => name.replace(/^naa\./, '').replace(/:/g, '').toLowerCase();

// Prints the state in one round trip: storage objects, then every link and ACL/LUN directory
// under the fabrics. Nothing ballast needs is deeper than tpgt_1/acls/<initiator>/lun_N/<link>.
const readState = (root: string) => `cd ${root} 2>/dev/null || { echo "LIO's configfs is not at ${root} (modprobe target_core_mod; mount -t configfs configfs /sys/kernel/config)" >&2; exit 3; }
for d in core/*_*/*; do
  [ -f "$d/udev_path" ] || continue
  printf 'S %s %s %s\\n' "$d" "$(cat "$d/enable" 2>/dev/null || echo 0)" "$(cat "$d/udev_path")"
done
for f in fc iscsi; do
  [ -d "$f" ] || continue
  find "$f" -mindepth 5 -maxdepth 6 -type l -printf 'L %p %l\\n'
  find "$f" -mindepth 4 -maxdepth 4 -type d \\( -path '*/acls/*' -o -path '*/np/*' -o -path '*/lun/*' \\) -printf 'D %p\\n'
done`;

/** Parses what readState prints. */
export function parseState(text: string): LioState {
  const state: LioState = { storageObjects: new Map(), fc: new Map(), iscsi: new Map() };
  const tpgOf = (fabric: string, target: string): LioTpg => {
    const map = fabric === 'fc' ? state.fc : state.iscsi;
    const key = fabric === 'fc' ? wwpnFromConfigfs(target) : target;
    let tpg = map.get(key);
    if (!tpg) map.set(key, (tpg = { luns: new Map(), acls: new Map(), portals: [] }));
    return tpg;
  };
  const initiatorKey = (fabric: string, name: string) => (fabric === 'fc' ? wwpnFromConfigfs(name) : name);
  for (const line of text.split('\n')) {
    const [kind, path, ...rest] = line.split(' ');
    if (kind === 'S' && path) {
      state.storageObjects.set(path.replace(/^core\//, ''), { enabled: rest[0] === '1', path: rest.slice(1).join(' ') });
      continue;
    }
    const parts = path?.split('/') ?? [];
    const [fabric, target, tpgt, group, entry, sub] = parts;
    if (!fabric || !target || tpgt !== 'tpgt_1') continue;
    const tpg = tpgOf(fabric, target);
    if (kind === 'D' && group === 'acls' && entry) {
      if (!tpg.acls.has(initiatorKey(fabric, entry))) tpg.acls.set(initiatorKey(fabric, entry), new Map());
    } else if (kind === 'D' && group === 'np' && entry) {
      tpg.portals.push(entry);
    } else if (kind === 'L' && group === 'lun' && entry?.startsWith('lun_')) {
      const object = /core\/([^/]+\/[^/]+)$/.exec(rest.join(' '))?.[1];
      if (object) tpg.luns.set(Number(entry.slice(4)), object);
    } else if (kind === 'L' && group === 'acls' && entry && sub?.startsWith('lun_')) {
      const tpgLun = /lun_(\d+)$/.exec(rest.join(' '))?.[1];
      let mapped = tpg.acls.get(initiatorKey(fabric, entry));
      if (!mapped) tpg.acls.set(initiatorKey(fabric, entry), (mapped = new Map()));
      if (tpgLun !== undefined) mapped.set(Number(sub.slice(4)), Number(tpgLun));
    }
  }
  return state;
}

/** One change to LIO's configfs: a few lines of sh, with its values as positional arguments. */
export interface LioChange {
  script: string;
  args: string[];
  /** A secret the script reads from stdin (at most one change of a batch has one). */
  secret?: string;
}

/** LUN_TAKEN: the exit code of a change that found the LUN number in use. */
const LUN_TAKEN = 17;

/**
 * LIO's configfs on the array host, written the way targetcli does (mkdir, attribute writes,
 * symlinks), through the array host's Exec. A batch of changes is one shell command (one SSH
 * round trip): each change a function called with its own arguments, never spliced into the
 * script; secrets go through stdin. The batch stops at the first failing change.
 */
export class LioConfigfs {
  constructor(
    private readonly exec: Exec,
    private readonly timeoutMs: number,
    /** TARGET_ROOT on an array; a plain directory in unit tests (the scripts run for real there). */
    private readonly root = TARGET_ROOT,
  ) {}

  async read(): Promise<LioState> {
    return parseState((await this.exec.run(['sh', '-c', readState(this.root)], { timeoutMs: this.timeoutMs })).stdout);
  }

  /** Runs the changes in order; LunTaken when one found its LUN number in use (another host got there first). */
  async apply(...changes: LioChange[]): Promise<void> {
    if (changes.length === 0) return;
    const secrets = changes.flatMap((c) => (c.secret === undefined ? [] : [c.secret]));
    if (secrets.length > 1) throw new Error('one LIO batch can carry one secret');
    const lines = ['set -e', `cd '${this.root}'`];
    const args: string[] = [];
    changes.forEach((change, i) => {
      const positions = change.args.map((_, j) => `"\${${args.length + j + 1}}"`).join(' ');
      args.push(...change.args);
      lines.push(`c${i}() {\n${change.script}\n}`, `c${i} ${positions}`);
    });
    try {
      // Symlink targets are absolute ($PWD/...): configfs resolves them from the caller's cwd.
      await this.exec.run(['sh', '-c', lines.join('\n'), 'lio', ...args], { timeoutMs: this.timeoutMs, ...(secrets.length ? { input: secrets[0], redact: secrets } : {}) });
    } catch (err) {
      if (err instanceof CommandFailed && err.exitCode === LUN_TAKEN) throw new LunTaken(err.stderr || 'a LUN number was taken');
      throw err;
    }
  }
}

// The changes. Each is idempotent where it can be: a retried export finds its own work done.

/**
 * LIO writes persistent-reservation state under its dbroot (/etc/target by default) at every
 * PR change, APTPL or not, and fails the command (NOT READY, "logical unit communication
 * failure") when <dbroot>/pr is missing, as on an array without targetcli's package.
 */
export const ensurePrDirectory = (): LioChange => ({ script: 'd=$(cat dbroot 2>/dev/null || echo /etc/target); mkdir -p "$d/pr"', args: [] });

/**
 * A fileio (file) or iblock (block device) storage object, enabled, with a unit serial of our
 * choosing (the LUN's WWID follows from it); removed again if a step fails.
 */
export function createStorageObject(object: string, path: string, sizeBytes: number, serial: string): LioChange {
  const control = object.startsWith('fileio_') ? `fd_dev_name=${path},fd_dev_size=${sizeBytes}` : `udev_path=${path}`;
  return {
    script: `d="core/$1"; mkdir -p "\${d%/*}"; mkdir "$d"
if ! { printf %s "$2" > "$d/control" && printf %s "$3" > "$d/udev_path" && printf %s "$4" > "$d/wwn/vpd_unit_serial" && echo 1 > "$d/enable"; }; then rmdir "$d"; return 1; fi`,
    args: [object, control, path, serial],
  };
}

export const removeStorageObject = (object: string): LioChange => ({ script: '[ ! -d "core/$1" ] || rmdir "core/$1"', args: [object] });

/** A TPG (fc/<wwpn>/tpgt_1 or iscsi/<iqn>/tpgt_1); an existing one is left as it is. */
export const ensureTpg = (tpg: string): LioChange => ({ script: 'mkdir -p "$1"', args: [tpg] });

/** Serves a storage object as LUN `lun` of a TPG; exits LUN_TAKEN when the number is in use. */
export const addLun = (tpg: string, lun: number, object: string): LioChange => ({
  script: `l="$1/lun/lun_$2"; mkdir "$l" 2>/dev/null || exit ${LUN_TAKEN}; ln -s "$PWD/core/$3" "$l/ballast" || { rmdir "$l"; return 1; }`,
  args: [tpg, String(lun), object],
});

const UNLINK_AND_REMOVE = 'for f in "$1"/*; do if [ -L "$f" ]; then rm "$f"; fi; done; rmdir "$1"';

export const removeLun = (tpg: string, lun: number): LioChange => ({
  script: `[ -d "$1/lun/lun_$2" ] || return 0; rm_dir() { ${UNLINK_AND_REMOVE}; }; rm_dir "$1/lun/lun_$2"`,
  args: [tpg, String(lun)],
});

/** The initiator's ACL (made if missing), with TPG LUN `lun` mapped to it as the same number. */
export const mapLun = (tpg: string, initiator: string, lun: number): LioChange => ({
  script: 'a="$1/acls/$2"; mkdir -p "$a"; [ -d "$a/lun_$3" ] || { mkdir "$a/lun_$3"; ln -s "$PWD/$1/lun/lun_$3" "$a/lun_$3/ballast"; }',
  args: [tpg, initiator, String(lun)],
});

export const unmapLun = (tpg: string, initiator: string, lun: number): LioChange => ({
  script: `[ -d "$1/acls/$2/lun_$3" ] || return 0; rm_dir() { ${UNLINK_AND_REMOVE}; }; rm_dir "$1/acls/$2/lun_$3"`,
  args: [tpg, initiator, String(lun)],
});

/** Removes an ACL with whatever it maps. */
export const removeAcl = (tpg: string, initiator: string): LioChange => ({
  script: `a="$1/acls/$2"; [ -d "$a" ] || return 0; rm_dir() { ${UNLINK_AND_REMOVE}; }
for m in "$a"/lun_*; do if [ -d "$m" ]; then rm_dir "$m"; fi; done; rmdir "$a"`,
  args: [tpg, initiator],
});

export const setAttribute = (path: string, value: string): LioChange => ({ script: 'printf %s "$2" > "$1"', args: [path, value] });

/** Writes a secret (a CHAP password) from stdin: it appears on no command line. */
export const setSecret = (path: string, secret: string): LioChange => ({ script: 'cat > "$1"', args: [path], secret });

export const addPortal = (tpg: string, portal: string): LioChange => ({ script: '[ -d "$1/np/$2" ] || mkdir "$1/np/$2"', args: [tpg, portal] });

/** Removes a whole iSCSI target: its TPG's LUNs, ACLs and portals first (configfs wants leaves first). */
export const removeIscsiTarget = (iqn: string): LioChange => ({
  script: `t="iscsi/$1"; [ -d "$t" ] || return 0; g="$t/tpgt_1"; rm_dir() { ${UNLINK_AND_REMOVE}; }
if [ -d "$g" ]; then
  echo 0 > "$g/enable" 2>/dev/null || true
  for a in "$g"/acls/*; do [ -d "$a" ] || continue; for m in "$a"/lun_*; do if [ -d "$m" ]; then rm_dir "$m"; fi; done; rmdir "$a"; done
  for l in "$g"/lun/lun_*; do if [ -d "$l" ]; then rm_dir "$l"; fi; done
  for n in "$g"/np/*; do if [ -d "$n" ]; then rmdir "$n"; fi; done
  rmdir "$g"
fi
rmdir "$t"`,
  args: [iqn],
});

export class LunTaken extends Error {}
