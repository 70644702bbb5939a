// Instance metadata options as they travel from the cloud to a node: checked value by value (a
// node takes nothing it would hand to nftables unchecked), with EC2's defaults.
import { Ec2Error } from '../protocol/errors.ts';
import type { InstanceMetadataOptions } from './node-api.ts';

export const DEFAULT_METADATA_OPTIONS: InstanceMetadataOptions = Object.freeze({
  httpTokens: 'optional', httpPutResponseHopLimit: 1, httpEndpoint: 'enabled',
});

export const MAX_HOP_LIMIT = 64;

function invalid(name: string, value: unknown, valid: string): Ec2Error {
  return new Ec2Error('InvalidParameterValue', `Value (${String(value)}) for parameter ${name} is invalid. ${valid}`);
}

/** The options as given, or EC2's error naming the first bad one. */
export function checkMetadataOptions(raw: unknown): InstanceMetadataOptions {
  if (!raw || typeof raw !== 'object') throw new Ec2Error('InvalidParameterValue', 'Metadata options must be an object.');
  const o = raw as Record<string, unknown>;
  if (o.httpTokens !== 'optional' && o.httpTokens !== 'required') throw invalid('HttpTokens', o.httpTokens, 'Valid values are optional and required.');
  if (o.httpEndpoint !== 'enabled' && o.httpEndpoint !== 'disabled') throw invalid('HttpEndpoint', o.httpEndpoint, 'Valid values are enabled and disabled.');
  const hops = o.httpPutResponseHopLimit;
  if (typeof hops !== 'number' || !Number.isInteger(hops) || hops < 1 || hops > MAX_HOP_LIMIT) {
    throw invalid('HttpPutResponseHopLimit', hops, `It must be an integer from 1 to ${MAX_HOP_LIMIT}.`);
  }
  return { httpTokens: o.httpTokens, httpPutResponseHopLimit: hops, httpEndpoint: o.httpEndpoint };
}
