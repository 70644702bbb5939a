// What every EC2 operation handler receives, and the shape of a handler.
import type { Store } from '../store/store.ts';

export interface Caller {
  accountId: string;
  userId: string;
  userName: string;
  accessKeyId: string;
  isAdmin: boolean;
  /** JSON array of allowed action patterns (see src/auth/policy.ts); absent means everything. */
  policy?: string;
}

export interface CloudSettings {
  /** Region name the cloud answers as, e.g. "ironbark-1". */
  region: string;
  /** Public endpoint URL users point their clients at. */
  endpoint: string;
}

export interface RequestContext {
  requestId: string;
  action: string;
  caller: Caller;
  store: Store;
  settings: CloudSettings;
}

/**
 * An EC2 operation: takes the input parsed from the model (member names as in the model,
 * e.g. `KeyName`, `Filters: [{Name, Values}]`) and returns the output structure the model
 * describes (e.g. `{ KeyPairs: [...] }`). Throw Ec2Error for EC2 errors.
 * DryRun is handled before the handler runs: a handler never sees DryRun=true.
 */
export type OperationHandler = (ctx: RequestContext, input: any) => Promise<any>;

export type OperationTable = Record<string, OperationHandler>;
