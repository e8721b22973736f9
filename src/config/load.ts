import { readFile } from 'node:fs/promises';
import { load as loadYaml } from 'js-yaml';
import type { z } from 'zod';
import { ConfigError, errorMessage } from '../errors.js';
import { configSchema, type Config } from './schema.js';

export const DEFAULT_CONFIG_PATH = '/etc/ballast/config.yml';

function describeIssues(file: string, issues: readonly z.core.$ZodIssue[]): string {
  const lines = issues.map((issue) => {
    const key = issue.path.length ? issue.path.join('.') : '(top level)';
    return `${file}: ${key}: ${issue.message}`;
  });
  return lines.join('\n');
}

/** Validates a parsed document; every problem is reported at once, each naming file and key. */
export function parseConfig(document: unknown, file: string): Config {
  const parsed = configSchema.safeParse(document ?? {});
  if (!parsed.success) throw new ConfigError(describeIssues(file, parsed.error.issues));
  const config = parsed.data;
  if (!config.profiles[config.defaults.profile]) {
    throw new ConfigError(
      `${file}: defaults.profile: profile "${config.defaults.profile}" is not defined under profiles ` +
        `(defined: ${Object.keys(config.profiles).join(', ') || 'none'})`,
    );
  }
  return deepFreeze(config);
}

/**
 * Loads the configuration. With no file at the default path, ballast runs on its embedded
 * default (the loop backend under /var/lib/ballast); a path given explicitly must exist.
 */
export async function loadConfig(path?: string): Promise<Config> {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && path === undefined) return parseConfig({}, '(embedded default)');
    throw new ConfigError(`${file}: cannot read the configuration: ${errorMessage(err)}`);
  }
  let document: unknown;
  try {
    document = loadYaml(text, { filename: file });
  } catch (err) {
    throw new ConfigError(`${file}: not valid YAML: ${errorMessage(err)}`);
  }
  return parseConfig(document, file);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
