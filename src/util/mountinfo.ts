import { readFile } from 'node:fs/promises';

export interface MountEntry {
  mountPoint: string;
  source: string;
  fstype: string;
  /** Per-mount options (rw, noatime, ...). */
  options: string;
  /** The filesystem's own options (for NFS: vers=4.2, hard, lookupcache=pos, ...). */
  superOptions: string;
}

// mountinfo escapes space, tab, newline and backslash as octal: "\040".
function unescapeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/**
 * Parses /proc/self/mountinfo. A line looks like
 *   36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 * with optional fields before the "-" separator.
 */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const separator = fields.indexOf('-', 6);
    if (separator < 0) continue;
    entries.push({
      mountPoint: unescapeOctal(fields[4] ?? ''),
      options: fields[5] ?? '',
      fstype: fields[separator + 1] ?? '',
      source: unescapeOctal(fields[separator + 2] ?? ''),
      superOptions: fields[separator + 3] ?? '',
    });
  }
  return entries;
}

/** Reads the mount table of this process's mount namespace. */
export class MountTable {
  constructor(private readonly path = '/proc/self/mountinfo') {}

  async entries(): Promise<MountEntry[]> {
    return parseMountInfo(await readFile(this.path, 'utf8'));
  }

  /** The topmost mount at `mountPoint`, or undefined. */
  async find(mountPoint: string): Promise<MountEntry | undefined> {
    const matches = (await this.entries()).filter((e) => e.mountPoint === mountPoint);
    return matches[matches.length - 1];
  }
}
