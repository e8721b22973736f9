import { readFile } from 'node:fs/promises';
import { load as loadYaml } from 'js-yaml';
import type { z } from 'zod';
import { ConfigError, errorMessage } from '../errors.js';
import { configSchema, type Config } from './schema.js';

export const DEFAULT_CONFIG_PATH = '/etc/ballast/config.yml';

function describeIssues(file: string, issues: readonly z.core.$ZodIssue[], origins: ReadonlyMap<string, string>): string {
  const lines = issues.map((issue) => {
    const key = issue.path.length ? issue.path.join('.') : '(top level)';
    // A value that came from the environment is blamed on its variable, not on the file.
    const origin = [...origins].find(([path]) => key === path || key.startsWith(`${path}.`))?.[1];
    return origin ? `${origin} (${key}): ${issue.message}` : `${file}: ${key}: ${issue.message}`;
  });
  return lines.join('\n');
}

/**
 * Validates a parsed document; every problem is reported at once, each naming file and key
 * (or the environment variable, for a key listed in `origins`: config key -> variable).
 */
export function parseConfig(document: unknown, file: string, origins: ReadonlyMap<string, string> = new Map()): Config {
  const parsed = configSchema.safeParse(document ?? {});
  if (!parsed.success) throw new ConfigError(describeIssues(file, parsed.error.issues, origins));
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
 * Loads the configuration, then applies the BALLAST_* environment overrides (ENV_OVERRIDES)
 * over it. With no file at the default path, ballast runs on its embedded default
 * (the loop backend under /var/lib/ballast); a path given explicitly must exist.
 */
export async function loadConfig(path?: string, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || path !== undefined) {
      throw new ConfigError(`${file}: cannot read the configuration: ${errorMessage(err)}`);
    }
  }
  let document: unknown = {};
  // A file of comments only (every setting commented out) means the defaults, like no file.
  if (text !== undefined && text.split('\n').some((line) => !/^\s*(#.*)?$/.test(line))) {
    try {
      document = loadYaml(text, { filename: file });
    } catch (err) {
      throw new ConfigError(`${file}: not valid YAML: ${errorMessage(err)}`);
    }
  }
  const { document: overridden, origins } = applyEnvOverrides(document, env);
  return parseConfig(overridden, text === undefined ? '(embedded default)' : file, origins);
}

/**
 * Settings an environment variable overrides, over config.yml: the managed plugin's `env`
 * (`docker plugin set ballast BALLAST_LOG_LEVEL=debug`) and systemd units set these. An empty
 * value counts as unset, so the plugin can declare every variable with an empty default.
 */
export const ENV_OVERRIDES: Readonly<Record<string, readonly string[]>> = {
  BALLAST_LOG_LEVEL: ['log', 'level'],
  BALLAST_HOST_ID: ['host', 'id'],
  BALLAST_DEFAULT_SIZE: ['defaults', 'size'],
  BALLAST_DEFAULT_FSTYPE: ['defaults', 'fstype'],
  BALLAST_METRICS_LISTEN: ['metrics', 'listen'],
};

/** The document with the environment's overrides set, and which config key came from which variable. */
export function applyEnvOverrides(document: unknown, env: NodeJS.ProcessEnv): { document: unknown; origins: Map<string, string> } {
  const origins = new Map<string, string>();
  const set = Object.entries(ENV_OVERRIDES).filter(([name]) => (env[name] ?? '') !== '');
  if (!set.length || !isPlainObject(document ?? {})) return { document, origins };
  const result = structuredClone((document ?? {}) as Record<string, unknown>);
  for (const [name, path] of set) {
    const section = sectionAt(result, path.slice(0, -1));
    // A section the file got wrong (e.g. `log: debug`) is left for the schema to report.
    if (!section) continue;
    section[path[path.length - 1]!] = env[name]!.trim();
    origins.set(path.join('.'), name);
  }
  return { document: result, origins };
}

/** The object at `path` in `root`, made where missing; undefined when something else is there. */
function sectionAt(root: Record<string, unknown>, path: readonly string[]): Record<string, unknown> | undefined {
  let node = root;
  for (const key of path) {
    const inner = node[key] ?? (node[key] = {});
    if (!isPlainObject(inner)) return undefined;
    node = inner;
  }
  return node;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
