// STS on the cloud's endpoint: GetCallerIdentity, which Terraform's AWS provider and Ansible's
// modules call first to learn the account they work in. Any valid key may call it, whatever its
// policy, as in AWS.
import type { Caller } from '../context.ts';
import type { Store } from '../../store/store.ts';

export interface IdentityRequest {
  caller: Caller;
  store: Store;
  requestId: string;
}

export type IdentityOperation = (req: IdentityRequest, input: Record<string, string>) => Promise<Record<string, unknown>>;

/**
 * The ARN of a caller: the account's root for its own key (the account's `admin` user, which
 * Ironbark makes with the account), else the IAM user.
 */
export function callerArn(caller: Caller): string {
  return caller.isAdmin ? `arn:aws:iam::${caller.accountId}:root` : userArn(caller.accountId, caller.userName);
}

export function userArn(accountId: string, userName: string, path = '/'): string {
  return `arn:aws:iam::${accountId}:user${path}${userName}`;
}

/** The UserId AWS shows: the account id for the root, else the user's unique id (AIDA…). */
export function callerUserId(caller: Caller): string {
  return caller.isAdmin ? caller.accountId : caller.userId;
}

async function GetCallerIdentity(req: IdentityRequest): Promise<Record<string, unknown>> {
  return { UserId: callerUserId(req.caller), Account: req.caller.accountId, Arn: callerArn(req.caller) };
}

export const stsOperations: Record<string, IdentityOperation> = { GetCallerIdentity };
