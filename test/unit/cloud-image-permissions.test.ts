// Sharing images (issue 10, item 4's launchPermission part): DescribeImages Owners and
// ExecutableUsers, Modify/Describe/ResetImageAttribute, DeregisterImage, and RunInstances of a
// shared, unshared and own-boot-loader image, through the handlers with a fake cluster.
import { describe, it, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { openStore, type Store } from '../../src/store/store.ts';
import { createAccountWithDefaults, ensureZone } from '../../src/cloud/provision.ts';
import { seedVmTypes } from '../../src/cloud/vm-types.ts';
import { imageOperations, registerImageFiles, type RegisteredImage } from '../../src/cloud/images/images.ts';
import { imageAttributeOperations } from '../../src/cloud/images/image-attributes.ts';
import { instanceOperations } from '../../src/cloud/instances.ts';
import { taggingOperations } from '../../src/cloud/tagging.ts';
import { ComputeDirectory } from '../../src/cloud/compute-directory.ts';
import { ADMIN_ACCOUNT_SETTING } from '../../src/cloud/admin-auth.ts';
import type { InstanceSpec } from '../../src/node/node-api.ts';
import { FakeCluster } from '../helpers/fake-cluster.ts';
import { callOperation, contextFor, expectEc2Error } from '../helpers/handler-context.ts';

const ZONE = 'ironbark-1a';
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const quiet = { info() {}, warn() {}, error() {} };

describe('image launch permissions', () => {
  let store: Store;
  let cluster: FakeCluster;
  let A: string; // owner
  let B: string; // shared with
  let C: string; // not shared with
  let cloudImage: RegisteredImage; // the cloud's own public image (admin account A)
  let own: string; // A's private image that boots from its own disk
  let call: (account: string, action: string, input?: object) => Promise<any>;

  beforeEach(async () => {
    store = await openStore({ url: ':memory:' });
    await ensureZone(store, { name: ZONE, cidr: '10.1.0.0/16', region: 'ironbark-1' });
    await seedVmTypes(store.db);
    A = (await createAccountWithDefaults(store, 'alpha')).account.id;
    B = (await createAccountWithDefaults(store, 'beta')).account.id;
    C = (await createAccountWithDefaults(store, 'gamma')).account.id;
    await store.db.insertInto('settings').values({ key: ADMIN_ACCOUNT_SETTING, value: A }).execute();
    cloudImage = await registerImageFiles(store, {
      name: 'ironbark-default', ownerAccountId: A, public: true, kernelCmdline: 'console=ttyS0',
      kernel: { path: '/img/vmlinuz', sha256: sha('k'), sizeBytes: 10 },
      rootfs: { path: '/img/rootfs.img', sha256: sha('root'), sizeBytes: 30, format: 'raw' },
    });
    own = 'ami-0123456789abcdef0';
    await store.db.insertInto('images').values({
      id: own, account_id: A, name: 'my-bios-disk', description: 'mine', kind: 'machine', architecture: 'x86_64',
      state: 'available', is_public: 0, kernel_id: null, ramdisk_id: null, root_device_name: '/dev/vda', kernel_cmdline: null,
      location: '/data/imported-images/x.qcow2', sha256: sha('disk'), size_bytes: 1000, format: 'qcow2',
      created_at: new Date().toISOString(), boot_mode: 'legacy-bios',
    }).execute();
    cluster = new FakeCluster(ZONE);
    const directory = new ComputeDirectory();
    directory.register(cluster);
    const ops = {
      ...imageOperations, ...imageAttributeOperations, ...taggingOperations,
      ...instanceOperations({ directory, imageUrl: (id) => `http://cluster/images/${id}`, statusInitializingMs: 0, log: quiet }),
    };
    call = (account, action, input = {}) => callOperation(contextFor(store, account), ops, action, input);
  });
  afterEach(async () => store.close());

  const imageIds = async (account: string, input: object = {}) =>
    (await call(account, 'DescribeImages', input)).Images.map((i: any) => i.ImageId).sort();
  const launch = (account: string, imageId = own) =>
    call(account, 'RunInstances', { ImageId: imageId, MinCount: 1, MaxCount: 1, Placement: { AvailabilityZone: ZONE } });
  const permissions = async (account = A) =>
    (await call(account, 'DescribeImageAttribute', { ImageId: own, Attribute: 'launchPermission' })).LaunchPermissions;

  it('an image that boots from its own disk is hvm with its boot mode, and launches without a kernel', async () => {
    const [image] = (await call(A, 'DescribeImages', { ImageIds: [own] })).Images;
    assert.equal(image.VirtualizationType, 'hvm');
    assert.equal(image.BootMode, 'legacy-bios');
    assert.equal(image.KernelId, undefined);
    assert.equal(image.Public, false);
    const out = await launch(A);
    assert.equal(out.Instances[0].KernelId, undefined);
    assert.equal(out.Instances[0].VirtualizationType, 'hvm');
    const [[spec]] = cluster.callsTo('runInstances') as [InstanceSpec[]][];
    const sent = (Array.isArray(spec) ? spec[0] : spec) as InstanceSpec;
    assert.equal(sent.kernel, undefined);
    assert.equal(sent.bootMode, 'legacy-bios');
    assert.equal(sent.root.id, own);
    await expectEc2Error(call(A, 'RunInstances', { ImageId: own, KernelId: cloudImage.kernelId, MinCount: 1, MaxCount: 1 }), 'InvalidParameterCombination');
    const bootMode = await call(A, 'DescribeImageAttribute', { ImageId: own, Attribute: 'bootMode' });
    assert.deepEqual(bootMode, { ImageId: own, BootMode: { Value: 'legacy-bios' } });
  });

  it('shares with one account: it sees and launches the image; a third account neither', async () => {
    await expectEc2Error(launch(B), 'InvalidAMIID.NotFound');
    assert.ok(!(await imageIds(B)).includes(own));
    await call(A, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ UserId: B }] } });
    assert.deepEqual(await permissions(), [{ UserId: B }]);
    assert.ok((await imageIds(B)).includes(own));
    const [seen] = (await call(B, 'DescribeImages', { ImageIds: [own] })).Images;
    assert.equal(seen.OwnerId, A);
    assert.equal(seen.Public, false);
    const out = await launch(B);
    assert.equal(out.OwnerId, B);
    assert.equal(out.Instances[0].ImageId, own);
    await expectEc2Error(launch(C), 'InvalidAMIID.NotFound');
    await expectEc2Error(call(C, 'DescribeImages', { ImageIds: [own] }), 'InvalidAMIID.NotFound');
    // Only the owner reads or changes who may launch it.
    await expectEc2Error(permissions(B), 'AuthFailure');
    await expectEc2Error(call(B, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ UserId: C }] } }), 'AuthFailure');
    await expectEc2Error(call(C, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ UserId: C }] } }), 'InvalidAMIID.NotFound');
    await expectEc2Error(call(B, 'DeregisterImage', { ImageId: own }), 'AuthFailure');
    // Removing takes it away again.
    await call(A, 'ModifyImageAttribute', { ImageId: own, OperationType: 'remove', UserIds: [B] });
    assert.deepEqual(await permissions(), []);
    await expectEc2Error(launch(B), 'InvalidAMIID.NotFound');
  });

  it('group all makes it public; ResetImageAttribute makes it private and shared with nobody', async () => {
    await call(A, 'ModifyImageAttribute', { ImageId: own, OperationType: 'add', UserGroups: ['all'], UserIds: [B] });
    assert.deepEqual(await permissions(), [{ Group: 'all' }, { UserId: B }]);
    assert.ok((await imageIds(C)).includes(own));
    await launch(C);
    await call(A, 'ResetImageAttribute', { ImageId: own, Attribute: 'launchPermission' });
    assert.deepEqual(await permissions(), []);
    assert.ok(!(await imageIds(B)).includes(own));
    await expectEc2Error(call(A, 'ResetImageAttribute', { ImageId: own, Attribute: 'description' }), 'InvalidParameterValue');
  });

  it('refuses malformed launch permissions with EC2 codes, and changes nothing', async () => {
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ UserId: '12345' }] } }), 'InvalidAMIAttributeItemValue');
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ Group: 'everyone' }] } }), 'InvalidAMIAttributeItemValue');
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: own, UserIds: [B] }), 'InvalidParameterValue');
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: own }), 'MissingParameter');
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: own, Description: { Value: 'x' }, LaunchPermission: { Add: [{ UserId: B }] } }), 'InvalidParameterCombination');
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: own, Attribute: 'kernel', Value: 'aki-12345678' }), 'InvalidParameterValue');
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: 'ami-1', LaunchPermission: { Add: [{ UserId: B }] } }), 'InvalidAMIID.Malformed');
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: 'ami-0000000000000000f', LaunchPermission: { Add: [{ UserId: B }] } }), 'InvalidAMIID.NotFound');
    await expectEc2Error(call(A, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ OrganizationArn: 'arn:aws:organizations::1:organization/o-1' }] } }), 'InvalidParameterValue');
    assert.deepEqual(await permissions(), []);
    await expectEc2Error(call(A, 'DescribeImageAttribute', { ImageId: own, Attribute: 'colour' }), 'InvalidParameterValue');
  });

  it('description: set through either spelling, read by whoever can see the image', async () => {
    await call(A, 'ModifyImageAttribute', { ImageId: own, Description: { Value: 'a BIOS disk' } });
    assert.deepEqual(await call(A, 'DescribeImageAttribute', { ImageId: own, Attribute: 'description' }), { ImageId: own, Description: { Value: 'a BIOS disk' } });
    await call(A, 'ModifyImageAttribute', { ImageId: own, Attribute: 'description', Value: 'renamed' });
    await call(A, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ UserId: B }] } });
    assert.deepEqual(await call(B, 'DescribeImageAttribute', { ImageId: own, Attribute: 'description' }), { ImageId: own, Description: { Value: 'renamed' } });
    assert.equal((await call(B, 'DescribeImages', { ImageIds: [own] })).Images[0].Description, 'renamed');
  });

  it('Owners: self, account ids and amazon (the cloud\'s own images); ExecutableUsers: self, all, account ids', async () => {
    await call(A, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ UserId: B }] } });
    const cloudIds = [cloudImage.imageId, cloudImage.kernelId].sort();
    assert.deepEqual(await imageIds(B, { Owners: ['amazon'] }), cloudIds);
    assert.deepEqual(await imageIds(B, { Owners: ['aws-marketplace'] }), []);
    assert.deepEqual(await imageIds(B, { Owners: ['self'] }), []);
    assert.deepEqual(await imageIds(B, { Owners: [A] }), [...cloudIds, own].sort());
    assert.deepEqual(await imageIds(C, { Owners: [A] }), cloudIds);
    const amazon = (await call(B, 'DescribeImages', { ImageIds: [cloudImage.imageId] })).Images[0];
    assert.equal(amazon.ImageOwnerAlias, 'amazon');
    assert.deepEqual(await imageIds(B, { Filters: [{ Name: 'owner-alias', Values: ['amazon'] }] }), cloudIds);
    assert.deepEqual(await imageIds(B, { ExecutableUsers: ['self'] }), [own]);
    assert.deepEqual(await imageIds(B, { ExecutableUsers: ['all'] }), cloudIds);
    assert.deepEqual(await imageIds(C, { ExecutableUsers: ['self'] }), []);
    assert.deepEqual(await imageIds(A, { ExecutableUsers: [B] }), [own]);
    assert.deepEqual(await imageIds(A, { ExecutableUsers: [C] }), []);
    assert.deepEqual(await imageIds(A, { Owners: ['self'], ExecutableUsers: ['all'] }), cloudIds);
    assert.deepEqual(await imageIds(B, { Filters: [{ Name: 'is-public', Values: ['false'] }] }), [own]);
    assert.deepEqual(await imageIds(B, { Filters: [{ Name: 'virtualization-type', Values: ['hvm'] }] }), [own]);
    await expectEc2Error(call(B, 'DescribeImages', { Owners: ['nobody'] }), 'InvalidUserID.Malformed');
    await expectEc2Error(call(B, 'DescribeImages', { ExecutableUsers: ['nobody'] }), 'InvalidUserID.Malformed');
  });

  it('DeregisterImage: the owner only; it disappears for everyone, running instances stay', async () => {
    await call(A, 'ModifyImageAttribute', { ImageId: own, LaunchPermission: { Add: [{ UserId: B }] } });
    const running = (await launch(B)).Instances[0].InstanceId;
    assert.deepEqual(await call(A, 'DeregisterImage', { ImageId: own }), {});
    await expectEc2Error(call(A, 'DescribeImages', { ImageIds: [own] }), 'InvalidAMIID.NotFound');
    await expectEc2Error(launch(B), 'InvalidAMIID.NotFound');
    await expectEc2Error(call(A, 'DeregisterImage', { ImageId: own }), 'InvalidAMIID.NotFound');
    const row = await store.db.selectFrom('instances').select(['state']).where('id', '=', running).executeTakeFirstOrThrow();
    assert.equal(row.state, 'pending');
    assert.equal(cluster.callsTo('terminateInstances').length, 0);
    const perms = await store.db.selectFrom('image_launch_permissions').selectAll().where('image_id', '=', own).execute();
    assert.deepEqual(perms, []);
  });
});
