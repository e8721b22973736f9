import { InvalidVolumeName } from '../errors.js';

// Docker validates no plugin volume names on Linux; this is the only guard between a name
// and a path. Anything outside the pattern (slashes, "..", NUL, empty) never reaches disk.
const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function isValidVolumeName(name: unknown): name is string {
  return typeof name === 'string' && VOLUME_NAME.test(name);
}

export function assertVolumeName(name: unknown): string {
  if (!isValidVolumeName(name)) throw new InvalidVolumeName(String(name));
  return name;
}
