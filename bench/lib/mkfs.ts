/**
 * ballast's mkfs.ext4 argv (src/attach/filesystem.ts, MKFS_ARGS.ext4), without the label and
 * device it appends. Kept in step by hand: src/ does not export it.
 */
export const MKFS_EXT4 = ['mkfs.ext4', '-F', '-q', '-m0', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1'] as const;
