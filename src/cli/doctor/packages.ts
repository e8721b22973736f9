/** The Debian package that provides each tool doctor looks for (Debian 12, usrmerged). */
export const PACKAGE_OF: Readonly<Record<string, string>> = {
  blkid: 'util-linux',
  blockdev: 'util-linux',
  fsck: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  losetup: 'mount',
  'mkfs.ext4': 'e2fsprogs',
  'fsck.ext4': 'e2fsprogs',
  resize2fs: 'e2fsprogs',
  'mkfs.xfs': 'xfsprogs',
  'fsck.xfs': 'xfsprogs',
  xfs_growfs: 'xfsprogs',
  xfs_io: 'xfsprogs',
  perl: 'perl-base',
  iscsiadm: 'open-iscsi',
  iscsid: 'open-iscsi',
  multipath: 'multipath-tools',
  multipathd: 'multipath-tools',
  dmsetup: 'dmsetup',
  sg_persist: 'sg3-utils',
  nvme: 'nvme-cli',
  tgtadm: 'tgt',
  tgtd: 'tgt',
};

/** "apt-get install -y PKG" for a tool, or a plain hint when the package is not known. */
export function installHint(tool: string): string {
  const pkg = PACKAGE_OF[tool];
  return pkg ? `install it: apt-get install -y ${pkg}` : `install the package that provides ${tool}`;
}
