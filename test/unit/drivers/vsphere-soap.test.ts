import { asArray, envelope, moref, parseResponse, refOf, textOf, typeOf, VsphereFault } from '../../../src/drivers/vsphere/soap.js';
import { explainFault, vsphereError } from '../../../src/drivers/vsphere/faults.js';
import { swapUuidEndianness } from '../../../src/drivers/vsphere/inventory.js';

// The wire format alone (pure functions). The same code talks to vcsim in
// test/integration/vsphere/, where every request here is also sent for real.

const wrap = (body: string) =>
  `<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>${body}</soapenv:Body></soapenv:Envelope>`;

describe('vSphere SOAP requests', () => {
  it('puts _this first, keeps argument order, and types polymorphic values with xsi:type', () => {
    const xml = envelope('ReconfigVM_Task', moref('VirtualMachine', 'vm-42'), {
      spec: {
        deviceChange: [
          { operation: 'add', device: { $type: 'VirtualDisk', key: -101, backing: { $type: 'VirtualDiskFlatVer2BackingInfo', fileName: '[ds1] ballast/a/disk.vmdk', diskMode: 'independent_persistent' }, controllerKey: 1000, unitNumber: 3 } },
        ],
      },
    });
    expect(xml).toContain('<ReconfigVM_Task xmlns="urn:vim25"><_this type="VirtualMachine">vm-42</_this><spec><deviceChange><operation>add</operation>');
    expect(xml).toContain('<device xsi:type="VirtualDisk"><key>-101</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] ballast/a/disk.vmdk</fileName><diskMode>independent_persistent</diskMode></backing><controllerKey>1000</controllerKey><unitNumber>3</unitNumber></device>');
    expect(xml.indexOf('<key>')).toBeLessThan(xml.indexOf('<backing'));
  });

  it('repeats list elements and escapes text, so a hostile value cannot add elements', () => {
    const xml = envelope('Login', moref('SessionManager', 'SessionManager'), { userName: 'a</userName><x>', password: 'p&"<' });
    expect(xml).toContain('<userName>a&lt;/userName&gt;&lt;x&gt;</userName>');
    expect(xml).toContain('<password>p&amp;&quot;&lt;</password>');
    const list = envelope('X', moref('T', 't'), { pathSet: ['name', 'vm'] });
    expect(list).toContain('<pathSet>name</pathSet><pathSet>vm</pathSet>');
  });

  it('leaves out undefined arguments', () => {
    expect(envelope('X', moref('T', 't'), { a: undefined, b: 'x' })).not.toContain('<a');
  });
});

describe('vSphere SOAP responses', () => {
  it('returns returnval with references, lists and xsi types readable', () => {
    const xml = wrap(
      '<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Datastore">datastore-1</obj>' +
        '<propSet><name>vm</name><val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="VirtualMachine" xsi:type="ManagedObjectReference">vm-1</ManagedObjectReference></val></propSet>' +
        '<propSet><name>browser</name><val type="HostDatastoreBrowser" xsi:type="ManagedObjectReference">browser-1</val></propSet>' +
        '</objects></returnval></RetrievePropertiesExResponse>',
    );
    const result = parseResponse('RetrievePropertiesEx', xml);
    const props = asArray(result.objects[0]?.propSet ?? result.objects.propSet);
    expect(refOf(result.objects.obj)).toEqual({ type: 'Datastore', value: 'datastore-1' });
    const vmList = props.find((p) => textOf(p.name) === 'vm').val;
    expect(typeOf(vmList)).toBe('ArrayOfManagedObjectReference');
    expect(asArray(vmList.ManagedObjectReference).map(refOf)).toEqual([{ type: 'VirtualMachine', value: 'vm-1' }]);
    // type="..." (the reference's) and xsi:type="ManagedObjectReference" do not collide.
    expect(refOf(props.find((p) => textOf(p.name) === 'browser').val)).toEqual({ type: 'HostDatastoreBrowser', value: 'browser-1' });
  });

  it('returns undefined for a void method', () => {
    expect(parseResponse('Logout', wrap('<LogoutResponse xmlns="urn:vim25"></LogoutResponse>'))).toBeUndefined();
  });

  it('turns a fault into VsphereFault with its precise type and detail fields', () => {
    const xml = wrap(
      '<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>File [ds1] x was not found</faultstring>' +
        '<detail><FileNotFoundFault xmlns="urn:vim25" xsi:type="FileNotFound"><file>[ds1] x</file></FileNotFoundFault></detail></soapenv:Fault>',
    );
    let caught: unknown;
    try {
      parseResponse('DeleteDatastoreFile_Task', xml);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(VsphereFault);
    const fault = caught as VsphereFault;
    expect(fault.faultType).toBe('FileNotFound');
    expect(explainFault(fault)).toBe('file [ds1] x does not exist on the datastore');
    expect(vsphereError('delete volume v', fault).message).toBe('cannot delete volume v: file [ds1] x does not exist on the datastore');
  });

  it('names the missing privilege and object of a NoPermission fault', () => {
    const xml = wrap(
      '<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Permission to perform this operation was denied.</faultstring>' +
        '<detail><NoPermissionFault xmlns="urn:vim25" xsi:type="NoPermission"><object type="VirtualMachine">vm-7</object><privilegeId>VirtualMachine.Config.AddExistingDisk</privilegeId></NoPermissionFault></detail></soapenv:Fault>',
    );
    expect(() => parseResponse('ReconfigVM_Task', xml)).toThrow(VsphereFault);
    try {
      parseResponse('ReconfigVM_Task', xml);
    } catch (err) {
      expect(explainFault(err as VsphereFault)).toContain('lacks privilege VirtualMachine.Config.AddExistingDisk on vm-7');
    }
  });

  it('refuses an answer that is not SOAP, quoting it', () => {
    expect(() => parseResponse('Login', '<html>proxy error</html>')).toThrow(/not a SOAP envelope: <html>proxy error/);
  });
});

describe('BIOS UUID byte order', () => {
  it('swaps the first three fields and back', () => {
    const uuid = '00112233-4455-6677-8899-aabbccddeeff';
    expect(swapUuidEndianness(uuid)).toBe('33221100-5544-7766-8899-aabbccddeeff');
    expect(swapUuidEndianness(swapUuidEndianness(uuid))).toBe(uuid);
  });
});
