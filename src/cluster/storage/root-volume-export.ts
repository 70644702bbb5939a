// An instance that boots from an EBS volume (node/storage/root-volume.ts) reaches its root disk the
// way attached volumes are reached: the zone storage's NBD export, with the zone's TLS key. The
// cloud names the volume only; the cluster, which keeps the storage, adds where the node finds it.
import type { InstanceSpec } from '../../node/node-api.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import type { ClusterVolumes } from './cluster-volumes.ts';
import { VolumeNotFoundError } from './volume-backend.ts';

/** The spec with its root volume's export filled in (exported now if it was not); others as they are. */
export async function withRootVolumeExport(volumes: ClusterVolumes, spec: InstanceSpec): Promise<InstanceSpec> {
  if (!spec.rootVolume) return spec;
  const backend = volumes.backend;
  if (!backend) throw new Ec2Error('UnsupportedOperation', `Instance ${spec.instanceId} boots from a volume, and the cluster of zone ${spec.zone} keeps no volumes.`);
  try {
    const nbd = await backend.export(spec.rootVolume.volumeId);
    return { ...spec, rootVolume: { volumeId: spec.rootVolume.volumeId, nbd } };
  } catch (err) {
    if (err instanceof VolumeNotFoundError) throw new Ec2Error('InvalidVolume.NotFound', `The root volume '${err.volumeId}' of instance ${spec.instanceId} does not exist.`);
    throw err;
  }
}
