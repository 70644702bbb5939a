// Every EC2 operation this cloud implements, by action name. The model knows all the others;
// they answer UnsupportedOperation.
import type { OperationTable } from './context.ts';
import { regionOperations } from './regions.ts';
import { accountAttributeOperations } from './account-attributes.ts';
import { keyPairOperations } from './key-pairs.ts';
import { taggingOperations } from './tagging.ts';
import { vpcOperations } from './vpcs.ts';
import { securityGroupOperations } from './security-groups.ts';
import { vmTypeOperations } from './vm-types.ts';
import { imageOperations } from './images/images.ts';
import { imageAttributeOperations } from './images/image-attributes.ts';
import { ebsImageOperations } from './images/ebs-images.ts';
import { imageCreateOperations } from './images/image-create.ts';
import { instanceOperations, type InstanceOperationDeps } from './instances.ts';
import { instanceMetadataOptionOperations } from './instance-metadata-options.ts';
import { addressOperations } from './network/addresses.ts';
import { subnetAttributeOperations } from './network/subnet-attributes.ts';
import { volumeOperations } from './storage/volumes.ts';
import { snapshotOperations } from './storage/snapshots.ts';
import { instanceEventOperations } from './compute/instance-events.ts';

export function allOperations(compute: InstanceOperationDeps): OperationTable {
  return {
    ...regionOperations,
    ...accountAttributeOperations,
    ...keyPairOperations,
    ...taggingOperations,
    ...vpcOperations,
    ...securityGroupOperations,
    ...vmTypeOperations,
    ...imageOperations,
    ...imageAttributeOperations,
    ...ebsImageOperations,
    ...imageCreateOperations,
    ...instanceOperations(compute),
    ...instanceMetadataOptionOperations(compute),
    ...instanceEventOperations,
    ...addressOperations,
    ...subnetAttributeOperations,
    ...volumeOperations(),
    ...snapshotOperations(),
  };
}
