import { BackendUnavailable, BallastError, errorMessage } from '../../errors.js';
import { textOf, VsphereFault } from './soap.js';

/** A fault in words for the person at the docker prompt: what vCenter refused, and on what. */
export function explainFault(fault: VsphereFault): string {
  const d = fault.detail;
  // vcsim's task faults carry only the Go type name ("*types.FileNotFound") as their message.
  if (fault.faultString.startsWith('*types.')) fault = new VsphereFault(fault.faultType, '', d);
  const file = d.file !== undefined ? textOf(d.file) : undefined;
  switch (fault.faultType) {
    case 'FileNotFound':
      return `file ${file ?? '(unnamed)'} does not exist on the datastore`;
    case 'FileAlreadyExists':
      return `file ${file ?? '(unnamed)'} already exists on the datastore`;
    case 'NoPermission':
    case 'NotAuthenticated':
      return `the vCenter user lacks privilege ${textOf(d.privilegeId) || '(unnamed)'} on ${textOf(d.object) || 'the object'}; grant it in vCenter (Administration > Access Control)`;
    case 'InvalidState':
    case 'InvalidPowerState':
    case 'TaskInProgress':
      return `the object is busy or in a state that does not allow this now (${fault.faultType}${fault.faultString ? `: ${fault.faultString}` : ''})`;
    case 'InvalidDatastore':
    case 'InvalidDatastorePath':
      return `no such datastore or datastore path (${textOf(d.datastore) || textOf(d.name) || textOf(d.datastorePath) || fault.faultString})`;
    case 'ManagedObjectNotFound':
      return `${textOf(d.obj) || 'the object'} does not exist (any more) in vCenter`;
    case 'InvalidDeviceSpec':
      return `vCenter rejected the disk device change (${fault.faultString || 'InvalidDeviceSpec'})`;
    case 'NoDiskSpace':
    case 'InsufficientDisksFault':
      return `the datastore is full (${fault.faultString || fault.faultType})`;
    default:
      return `${fault.faultType}${fault.faultString ? `: ${fault.faultString}` : ''}`;
  }
}

/** Any failure of a vSphere step as a BallastError that says which step failed and why. */
export function vsphereError(what: string, err: unknown): BallastError {
  if (err instanceof BallastError) return err;
  if (err instanceof VsphereFault) return new BackendUnavailable(`cannot ${what}: ${explainFault(err)}`, { cause: err });
  return new BackendUnavailable(`cannot ${what}: ${errorMessage(err)}`, { cause: err });
}
