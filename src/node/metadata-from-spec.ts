// What an instance's metadata service answers, derived from the spec its node was given.
import type { InstanceSpec } from './node-api.ts';
import type { InstanceMetadata } from './metadata-service.ts';

export function metadataFromSpec(spec: InstanceSpec): InstanceMetadata {
  return {
    instanceId: spec.instanceId,
    amiId: spec.imageId,
    instanceType: spec.vmType.name,
    localIpv4: spec.privateIp,
    localHostname: spec.privateDnsName,
    publicIpv4: spec.publicIp,
    publicHostname: spec.publicIp ? `ec2-${spec.publicIp.replaceAll('.', '-')}.${spec.region}.compute.amazonaws.com` : undefined,
    availabilityZone: spec.zone,
    region: spec.region,
    publicKeys: spec.publicKeys,
    securityGroups: spec.securityGroups.map((g) => g.name),
    securityGroupIds: spec.securityGroups.map((g) => g.id),
    reservationId: spec.reservationId,
    mac: spec.mac,
    // The spec carries user data base64-encoded, as the user handed it to RunInstances.
    userData: spec.userData !== undefined && spec.userData !== '' ? Buffer.from(spec.userData, 'base64') : undefined,
    accountId: spec.accountId,
    launchTime: new Date(spec.launchTime),
    // Only images registered as kernels/ramdisks have ids EC2 would show here.
    kernelId: spec.kernel?.id.startsWith('aki-') ? spec.kernel.id : undefined,
    ramdiskId: spec.ramdisk?.id.startsWith('ari-') ? spec.ramdisk.id : undefined,
    amiLaunchIndex: spec.launchIndex,
    architecture: 'x86_64',
    vpcId: spec.vpcId,
    subnetId: spec.subnetId,
    subnetIpv4CidrBlock: spec.subnetCidr,
    // EC2's defaults when the launch gave none: tokens optional, hop limit 1, endpoint enabled.
    httpTokens: spec.metadataOptions?.httpTokens === 'required' ? 'required' : 'optional',
    httpEndpoint: spec.metadataOptions?.httpEndpoint === 'disabled' ? 'disabled' : 'enabled',
    httpPutResponseHopLimit: hopLimitOf(spec),
    rootDeviceName: '/dev/vda',
  };
}

function hopLimitOf(spec: InstanceSpec): number {
  const hops = spec.metadataOptions?.httpPutResponseHopLimit;
  return typeof hops === 'number' && Number.isInteger(hops) && hops >= 1 && hops <= 64 ? hops : 1;
}
