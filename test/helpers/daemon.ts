// Temporary: moved to test/lab/. Kept only until iscsi-daemon, nvme-tcp and powerflex tests
// (being edited by other helpers) import test/lab directly; then delete this file.
export * from '../lab/ballast.js';
