/**
 * How this host reaches a volume: produced by a backend driver, consumed by an attacher.
 * The one value that passes between the two layers, so neither imports the other.
 */
export type Export = { transport: 'loop'; file: string };

export type Transport = Export['transport'];
