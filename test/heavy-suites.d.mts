/** `path`: relative to the repository root. */
export function isHeavySuite(path: string): boolean;
