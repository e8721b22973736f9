// Docker's volume plugin protocol (docker.volumedriver/1.0), the wire shapes only.
// Field names are Docker's own. Every call is POST /<Method> with a JSON body (often without
// a Content-Type, sometimes empty); every reply is a JSON object, errors as {"Err": "..."}.
import { z } from 'zod';

export const ACTIVATE_PATH = '/Plugin.Activate';

export const ActivateResponse = { Implements: ['VolumeDriver'] } as const;

const name = z.string({ error: 'Name is required' });

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

// `docker volume create -o` and the Engine API carry option values as strings only; anything
// else came from another client, and coercing it (an object becomes "[object Object]") would
// hide its mistake behind a confusing option error.
const optionValue = z.string({ error: (issue) => `Docker sends option values as strings; got ${kindOf(issue.input)}` });

/** Request schemas by method; unknown fields are ignored, as Docker may add some. */
export const requestSchemas = {
  'VolumeDriver.Create': z.object({ Name: name, Opts: z.record(z.string(), optionValue).nullish() }),
  'VolumeDriver.Remove': z.object({ Name: name }),
  'VolumeDriver.Mount': z.object({ Name: name, ID: z.string().default('') }),
  'VolumeDriver.Unmount': z.object({ Name: name, ID: z.string().default('') }),
  'VolumeDriver.Path': z.object({ Name: name }),
  'VolumeDriver.Get': z.object({ Name: name }),
  'VolumeDriver.List': z.object({}),
  'VolumeDriver.Capabilities': z.object({}),
} as const;

export type VolumeMethod = keyof typeof requestSchemas;
export type RequestOf<M extends VolumeMethod> = z.output<(typeof requestSchemas)[M]>;

export interface WireVolume {
  Name: string;
  Mountpoint: string;
  CreatedAt?: string;
  Status?: Record<string, unknown>;
}

export interface ErrResponse {
  Err: string;
}
