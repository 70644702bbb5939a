// Images: registration from files (idempotent, aki/ari/ami together), DescribeImages with its
// selectors, filters and errors, visibility of public and private images, and image tags.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { openStore, type Store } from '../../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { imageOperations, imageRefFor, registerImageFiles, type ImageFilesSpec } from '../../src/cloud/images/images.ts';
import { taggingOperations } from '../../src/cloud/tagging.ts';
import { callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

function imageSpec(name: string, owner: string, opts: { public?: boolean; build?: string; ramdisk?: boolean } = {}): ImageFilesSpec {
  const build = opts.build ?? '1';
  return {
    name, description: `${name} guest`, ownerAccountId: owner, public: opts.public ?? true,
    kernel: { path: `/data/images/${name}/vmlinuz`, sha256: sha(`${name}-kernel-${build}`), sizeBytes: 1000 },
    ...(opts.ramdisk === false ? {} : { ramdisk: { path: `/data/images/${name}/initrd`, sha256: sha(`${name}-initrd-${build}`), sizeBytes: 500 } }),
    rootfs: { path: `/data/images/${name}/rootfs.qcow2`, sha256: sha(`${name}-rootfs-${build}`), sizeBytes: 5000, format: 'qcow2' },
    kernelCmdline: 'console=ttyS0 root=/dev/vda',
  };
}

describe('images', () => {
  let store: Store;
  let A: string;
  let B: string;
  let pub: { imageId: string; kernelId: string; ramdiskId?: string };
  let privB: { imageId: string; kernelId: string; ramdiskId?: string };
  const call = (account: string, action: string, input: object = {}) =>
    callOperation(contextFor(store, account), { ...imageOperations, ...taggingOperations }, action, input);
  const ids = (out: any) => out.Images.map((i: any) => i.ImageId).sort();

  before(async () => {
    store = await openStore({ url: ':memory:' });
    await ensureZone(store, { name: 'ironbark-1a', cidr: '10.1.0.0/16', region: 'ironbark-1' });
    A = (await createAccountWithDefaults(store, 'alpha')).account.id;
    B = (await createAccountWithDefaults(store, 'beta')).account.id;
    pub = await registerImageFiles(store, imageSpec('ironbark-default', A));
    privB = await registerImageFiles(store, imageSpec('beta-private', B, { public: false, ramdisk: false }));
  });
  after(async () => store.close());

  it('registers a kernel, a ramdisk and a machine image that points at them', async () => {
    assert.match(pub.imageId, /^ami-[0-9a-f]{17}$/);
    assert.match(pub.kernelId, /^aki-[0-9a-f]{17}$/);
    assert.match(pub.ramdiskId!, /^ari-[0-9a-f]{17}$/);
    const out = await call(A, 'DescribeImages', { ImageIds: [pub.imageId] });
    assert.equal(out.Images.length, 1);
    const image = out.Images[0];
    assert.deepEqual({ ...image, CreationDate: undefined }, {
      ImageId: pub.imageId, ImageLocation: `${A}/ironbark-default`, State: 'available', OwnerId: A, CreationDate: undefined,
      Public: true, Architecture: 'x86_64', ImageType: 'machine', KernelId: pub.kernelId, RamdiskId: pub.ramdiskId,
      Name: 'ironbark-default', Description: 'ironbark-default guest', RootDeviceType: 'instance-store', RootDeviceName: '/dev/vda',
      BlockDeviceMappings: [], VirtualizationType: 'paravirtual', Hypervisor: 'kvm', PlatformDetails: 'Linux/UNIX',
      UsageOperation: 'RunInstances', EnaSupport: false, Tags: [],
    });
    assert.match(image.CreationDate, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const kernel = (await call(A, 'DescribeImages', { ImageIds: [pub.kernelId] })).Images[0];
    assert.equal(kernel.ImageType, 'kernel');
    assert.equal(kernel.KernelId, undefined);
    assert.equal(kernel.RootDeviceName, undefined);
  });

  it('registering the same files again returns the same ids; a rebuild replaces the old image', async () => {
    assert.deepEqual(await registerImageFiles(store, imageSpec('ironbark-default', A)), pub);
    const rebuilt = await registerImageFiles(store, imageSpec('rebuilt', A, { build: '1' }));
    const second = await registerImageFiles(store, imageSpec('rebuilt', A, { build: '2' }));
    assert.notEqual(second.imageId, rebuilt.imageId);
    const names = (await call(A, 'DescribeImages', { Filters: [{ Name: 'name', Values: ['rebuilt*'] }] })).Images;
    assert.deepEqual(names.map((i: any) => i.ImageId).sort(), [second.imageId, second.kernelId, second.ramdiskId].sort());
    await expectEc2Error(call(A, 'DescribeImages', { ImageIds: [rebuilt.imageId] }), 'InvalidAMIID.NotFound');
  });

  it('shows public images to everyone and private images only to their owner', async () => {
    const seenByA = ids(await call(A, 'DescribeImages'));
    assert.ok(seenByA.includes(pub.imageId));
    assert.ok(!seenByA.includes(privB.imageId));
    const seenByB = ids(await call(B, 'DescribeImages'));
    assert.ok(seenByB.includes(pub.imageId) && seenByB.includes(privB.imageId) && seenByB.includes(privB.kernelId));
    await expectEc2Error(call(A, 'DescribeImages', { ImageIds: [privB.imageId] }), 'InvalidAMIID.NotFound', `The image id '[${privB.imageId}]' does not exist`);
  });

  it('answers EC2 errors for malformed and unknown ids', async () => {
    await expectEc2Error(call(A, 'DescribeImages', { ImageIds: ['ami-xyz'] }), 'InvalidAMIID.Malformed', 'Invalid id: "ami-xyz" (expecting "ami-...")');
    await expectEc2Error(call(A, 'DescribeImages', { ImageIds: ['ami-00000000'] }), 'InvalidAMIID.NotFound', "The image id '[ami-00000000]' does not exist");
    await expectEc2Error(call(A, 'DescribeImages', { ImageIds: [pub.imageId, 'ami-00000000', 'aki-11111111'] }), 'InvalidAMIID.NotFound',
      "The image ids '[ami-00000000, aki-11111111]' do not exist");
    await expectEc2Error(call(A, 'DescribeImages', { ImageIds: [pub.imageId], MaxResults: 5 }), 'InvalidParameterCombination');
  });

  it('selects by Owners and ExecutableUsers', async () => {
    assert.deepEqual(ids(await call(B, 'DescribeImages', { Owners: ['self'] })), [privB.imageId, privB.kernelId].sort());
    assert.ok(ids(await call(B, 'DescribeImages', { Owners: [A] })).includes(pub.imageId));
    assert.deepEqual(ids(await call(B, 'DescribeImages', { Owners: ['amazon'] })), []);
    await expectEc2Error(call(B, 'DescribeImages', { Owners: ['bob'] }), 'InvalidUserID.Malformed');
    const publicOnes = ids(await call(B, 'DescribeImages', { ExecutableUsers: ['all'] }));
    assert.ok(publicOnes.includes(pub.imageId) && !publicOnes.includes(privB.imageId));
    assert.deepEqual(ids(await call(B, 'DescribeImages', { ExecutableUsers: ['self'] })), [privB.imageId, privB.kernelId].sort());
    assert.deepEqual(ids(await call(B, 'DescribeImages', { ExecutableUsers: [A] })), []);
    assert.ok(ids(await call(B, 'DescribeImages', { IncludeDeprecated: true })).includes(pub.imageId));
  });

  it('filters on every documented field', async () => {
    const one = async (name: string, values: string[]) => ids(await call(B, 'DescribeImages', { Filters: [{ Name: name, Values: values }] }));
    assert.deepEqual(await one('image-id', [pub.imageId]), [pub.imageId]);
    assert.deepEqual(await one('name', ['ironbark-def*']), [pub.imageId, pub.kernelId, pub.ramdiskId].sort());
    assert.deepEqual(await one('image-type', ['ramdisk']).then((l) => l.includes(pub.ramdiskId)), true);
    assert.deepEqual(await one('kernel-id', [privB.kernelId]), [privB.imageId]);
    assert.deepEqual(await one('ramdisk-id', [pub.ramdiskId!]), [pub.imageId]);
    assert.deepEqual(await one('is-public', ['false']), [privB.imageId, privB.kernelId].sort());
    assert.deepEqual(await one('owner-id', [B]), [privB.imageId, privB.kernelId].sort());
    assert.equal((await one('state', ['available'])).length, (await call(B, 'DescribeImages')).Images.length);
    for (const [name, value] of [['architecture', 'x86_64'], ['root-device-type', 'instance-store'], ['virtualization-type', 'paravirtual'], ['hypervisor', 'kvm']]) {
      assert.ok((await one(name!, [value!])).includes(pub.imageId), name);
    }
    assert.deepEqual(await one('architecture', ['arm64']), []);
    await expectEc2Error(call(B, 'DescribeImages', { Filters: [{ Name: 'bogus', Values: ['x'] }] }), 'InvalidParameterValue');
  });

  it('tags the owner\'s images only, and filters on them', async () => {
    await call(A, 'CreateTags', { Resources: [pub.imageId], Tags: [{ Key: 'os', Value: 'alpine' }] });
    const tagged = await call(A, 'DescribeImages', { Filters: [{ Name: 'tag:os', Values: ['alpine'] }] });
    assert.deepEqual(tagged.Images.map((i: any) => [i.ImageId, i.Tags]), [[pub.imageId, [{ Key: 'os', Value: 'alpine' }]]]);
    // Another account sees the public image without its owner's tags and may not tag it.
    assert.deepEqual((await call(B, 'DescribeImages', { ImageIds: [pub.imageId] })).Images[0].Tags, []);
    await expectEc2Error(call(B, 'CreateTags', { Resources: [pub.imageId], Tags: [{ Key: 'x', Value: 'y' }] }), 'InvalidAMIID.NotFound');
  });

  it('pages through images', async () => {
    const all = ids(await call(B, 'DescribeImages'));
    const first = await call(B, 'DescribeImages', { MaxResults: 5 });
    assert.equal(first.Images.length, 5);
    assert.ok(first.NextToken);
    const rest = await call(B, 'DescribeImages', { MaxResults: 1000, NextToken: first.NextToken });
    assert.deepEqual([...ids(first), ...ids(rest)].sort(), all);
  });

  it('builds the ImageRef a node fetches', async () => {
    const row = await store.db.selectFrom('images').selectAll().where('id', '=', pub.imageId).executeTakeFirstOrThrow();
    assert.deepEqual(imageRefFor(row, (id) => `http://cluster/images/${id}`), {
      id: pub.imageId, url: `http://cluster/images/${pub.imageId}`, sha256: sha('ironbark-default-rootfs-1'), sizeBytes: 5000, format: 'qcow2',
    });
    assert.equal(imageRefFor(row).url, '/data/images/ironbark-default/rootfs.qcow2');
  });
});
