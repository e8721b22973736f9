import { dirname } from 'node:path';
import { ok, problem, type DoctorContext, type Finding } from './types.js';

/** A directory the daemon writes: exists and takes a file, or can be created (serve makes it). */
async function checkDir({ probe, timeoutMs }: DoctorContext, dir: string, setting: string): Promise<Finding> {
  const result = await probe.writeTest(dir, timeoutMs);
  const elsewhere = `or set ${setting} to a writable directory`;
  switch (result.outcome) {
    case 'written':
      return ok('dirs', `${dir} is writable`);
    case 'missing':
      return result.ancestorWritable
        ? ok('dirs', `${dir} does not exist yet; ballast serve creates it (${result.ancestor} is writable)`)
        : problem('dirs', `${dir} does not exist and ${result.ancestor} is not writable, so ballast serve cannot create it: \`mkdir -p ${dir}\` as root, ${elsewhere}`);
    case 'failed':
      return problem('dirs', `${dir} is not writable (${result.error}): fix its permissions or remount it read-write, ${elsewhere}`);
    case 'timeout':
      return problem('dirs', `${dir} did not answer a file write within ${timeoutMs / 1000} s (a hung network filesystem?): fix the mount, ${elsewhere}`);
  }
}

/** The plugin socket's directory, the state directory and the mount root. */
export async function checkDirs(context: DoctorContext): Promise<Finding[]> {
  const { config } = context;
  return Promise.all([
    checkDir(context, dirname(config.socket), 'socket'),
    checkDir(context, config.state_dir, 'state_dir'),
    checkDir(context, config.mount_root, 'mount_root'),
  ]);
}
