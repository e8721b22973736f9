import { AttachFailed, CommandFailed } from '../errors.js';
import type { Exec } from '../exec.js';

/**
 * Attaches an image as a loop device from the very open file that holds an exclusive flock on
 * it. On NFSv4 a flock is a byte-range lock the server keeps only while this host renews its
 * NFS lease. A host cut off from the server loses the lock when that lease expires; the server
 * refuses what it had queued, and its client fails every later write made through the locked
 * file with EIO. Because the loop device writes through that file, the fence covers the
 * volume's data. (`losetup FILE` opens the image again, without the lock: those writes land.)
 * Another host gets the lock only once the server dropped the holder: taking it is the signal
 * that a takeover is safe. See research/nfs-lab.md, "an NFSv4 lock as the fence".
 *
 * util-linux cannot attach from a file descriptor, so this is a few lines of Perl (perl-base
 * is part of every Debian system): open, flock(LOCK_EX|LOCK_NB), LOOP_CTL_GET_FREE, then
 * LOOP_SET_FD with the locked descriptor. The loop device keeps the file, and so the lock,
 * after Perl exits; `losetup --detach` closes it and so releases the lock.
 */
const ATTACH_LOCKED = `
use strict; use Fcntl qw(:flock O_RDWR);
my $file = shift;
sysopen(my $img, $file, O_RDWR) or die "open $file: $!\\n";
unless (flock($img, LOCK_EX | LOCK_NB)) { exit 75 if $!{EWOULDBLOCK}; die "flock $file: $!\\n" }
sysopen(my $ctl, '/dev/loop-control', O_RDWR) or die "open /dev/loop-control: $!\\n";
for (1 .. 20) {
  my $n = ioctl($ctl, 0x4C82, 0); # LOOP_CTL_GET_FREE
  defined $n or die "LOOP_CTL_GET_FREE: $!\\n";
  $n = 0 if $n eq '0 but true';
  sysopen(my $dev, "/dev/loop$n", O_RDWR) or die "open /dev/loop$n: $!\\n";
  if (ioctl($dev, 0x4C00, fileno($img))) { print "/dev/loop$n\\n"; exit 0 } # LOOP_SET_FD
  die "LOOP_SET_FD /dev/loop$n: $!\\n" unless $!{EBUSY}; # taken meanwhile: ask again
}
die "no free loop device\\n";
`;

/** The exit code the script gives when another open file (another host) holds the lock. */
const LOCKED = 75;

/** Attaches `file` holding its lock: the loop device, or 'locked' when another holder has it. */
export async function attachLocked(exec: Exec, file: string): Promise<string | 'locked'> {
  try {
    const { stdout } = await exec.run(['perl', '-e', ATTACH_LOCKED, file]);
    const device = stdout.trim();
    if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`the locked attach printed no loop device for ${file}: ${JSON.stringify(stdout)}`);
    return device;
  } catch (err) {
    if (!(err instanceof CommandFailed)) throw err;
    if (err.exitCode === LOCKED) return 'locked';
    const why = err.timedOut ? 'timed out (the NFS server does not answer?)' : err.stderr.trim() || `exit code ${err.exitCode}`;
    throw new AttachFailed(`cannot attach ${file} holding its lock: ${why}`);
  }
}
