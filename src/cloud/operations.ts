// Every EC2 operation this cloud implements, by action name. The model knows all the others;
// they answer UnsupportedOperation.
import type { OperationTable } from './context.ts';
import { regionOperations } from './regions.ts';
import { accountAttributeOperations } from './account-attributes.ts';
import { keyPairOperations } from './key-pairs.ts';
import { taggingOperations } from './tagging.ts';
import { vpcOperations } from './vpcs.ts';
import { securityGroupOperations } from './security-groups.ts';

export function allOperations(): OperationTable {
  return {
    ...regionOperations,
    ...accountAttributeOperations,
    ...keyPairOperations,
    ...taggingOperations,
    ...vpcOperations,
    ...securityGroupOperations,
  };
}
