import { XMLBuilder, XMLParser } from 'fast-xml-parser';

// The vSphere API's wire format: SOAP 1.1 over HTTP(S), namespace urn:vim25. Requests are
// built from plain objects (fast-xml-parser's builder; key order is element order, which a
// real vCenter checks against its schema), responses parsed back to plain objects.

/** A managed object reference: `<obj type="VirtualMachine">vm-42</obj>`. */
export interface MoRef {
  type: string;
  value: string;
}

/** A request argument: text, a reference, a nested data object, or a list of them. */
export type SoapValue = string | number | boolean | MoRef | SoapObject | SoapValue[] | undefined;
/** A data object; `$type` becomes xsi:type (needed wherever the schema allows subtypes). */
export interface SoapObject {
  $type?: string;
  [field: string]: SoapValue;
}

/** A parsed response node: text, attributes under "@_", children by element name. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type SoapNode = any;

/** A fault vCenter answered with: its type (InvalidLogin, FileNotFound, ...), text and detail fields. */
export class VsphereFault extends Error {
  constructor(
    readonly faultType: string,
    readonly faultString: string,
    readonly detail: Record<string, SoapNode>,
  ) {
    super(`${faultType}: ${faultString}`);
    this.name = 'VsphereFault';
  }
}

export function isFault(err: unknown, ...types: string[]): err is VsphereFault {
  return err instanceof VsphereFault && types.includes(err.faultType);
}

export const moref = (type: string, value: string): MoRef => ({ type, value });

function isMoRef(value: unknown): value is MoRef {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.keys(value).length === 2 && 'type' in value && 'value' in value && !('$type' in value);
}

function toXmlNode(value: SoapValue): unknown {
  if (Array.isArray(value)) return value.map(toXmlNode);
  if (isMoRef(value)) return { '@_type': value.type, '#text': value.value };
  if (typeof value === 'object' && value !== null) {
    const node: Record<string, unknown> = {};
    if (value.$type) node['@_xsi:type'] = value.$type;
    for (const [key, field] of Object.entries(value)) {
      if (key !== '$type' && field !== undefined) node[key] = toXmlNode(field);
    }
    return node;
  }
  return value === undefined ? undefined : String(value);
}

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', textNodeName: '#text', suppressEmptyNode: false });

/** The request envelope for `method` on `self` with arguments in schema order. */
export function envelope(method: string, self: MoRef, args: SoapObject = {}): string {
  const body = builder.build({ [method]: { '@_xmlns': 'urn:vim25', _this: toXmlNode(self), ...(toXmlNode(args) as object) } });
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
    `<soapenv:Body>${body}</soapenv:Body></soapenv:Envelope>`
  );
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  textNodeName: '#text',
  // Element prefixes go (soapenv:Body -> Body); attribute names keep theirs, so a reference's
  // type="Datastore" and a value's xsi:type="ManagedObjectReference" never collide.
  transformTagName: (name: string) => name.replace(/^[^:]+:/, ''),
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
});

/** The response's `returnval` (undefined for void methods); throws VsphereFault for a fault. */
export function parseResponse(method: string, xml: string): SoapNode {
  const body = parser.parse(xml)?.Envelope?.Body;
  if (!body) throw new Error(`vCenter answered ${method} with something that is not a SOAP envelope: ${xml.slice(0, 200)}`);
  if (body.Fault) throw faultOf(body.Fault);
  const response = body[`${method}Response`];
  if (response === undefined) throw new Error(`vCenter's answer to ${method} has no ${method}Response`);
  return typeof response === 'object' ? response.returnval : undefined;
}

function faultOf(fault: SoapNode): VsphereFault {
  const faultString = String(fault.faultstring ?? '');
  const detail = fault.detail ?? {};
  const [element] = Object.keys(detail);
  if (!element) return new VsphereFault('ServerFault', faultString, {});
  const node = detail[element] ?? {};
  // <InvalidLoginFault xsi:type="InvalidLogin">; the type attribute is the precise subtype.
  const faultType = typeOf(node) ?? element.replace(/Fault$/, '');
  return new VsphereFault(faultType, faultString, typeof node === 'object' ? node : {});
}

/** A child that may occur once or many times, as a list. */
export function asArray<T = SoapNode>(value: T | T[] | undefined): T[] {
  if (value === undefined || value === null || value === '') return [];
  return Array.isArray(value) ? value : [value];
}

/** A reference in a response: `{ '#text': 'vm-42', '@_type': 'VirtualMachine' }`. */
export function refOf(node: SoapNode): MoRef {
  if (typeof node === 'object' && node !== null && '#text' in node) return { type: String(node['@_type']), value: String(node['#text']) };
  throw new Error(`expected a managed object reference, got ${JSON.stringify(node)}`);
}

/** A text value of a response node (a leaf may come back with attributes such as xsi:type). */
export function textOf(node: SoapNode): string {
  if (typeof node === 'object' && node !== null) return String(node['#text'] ?? '');
  return node === undefined ? '' : String(node);
}

/**
 * The xsi:type of a response node ("VirtualDisk", "ParaVirtualSCSIController", ...). Servers
 * pick their own prefix for the XML Schema instance namespace (vCenter "xsi", vcsim
 * "XMLSchema-instance"), so any prefixed type attribute counts.
 */
export function typeOf(node: SoapNode): string | undefined {
  if (typeof node !== 'object' || node === null) return undefined;
  const key = Object.keys(node).find((k) => /^@_[^:]+:type$/.test(k));
  return key === undefined ? undefined : String(node[key]);
}
