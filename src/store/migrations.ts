// One ordered migration list for both back-ends. Append new migrations; never edit a released one.
import { sql, type Kysely, type Migration } from 'kysely';

const text = 'text' as const;

export const migrations: Record<string, Migration> = {
  '0001-accounts-network-keys-groups-tags': {
    async up(db: Kysely<any>) {
      await db.schema.createTable('settings')
        .addColumn('key', text, (c) => c.primaryKey())
        .addColumn('value', text, (c) => c.notNull())
        .execute();
      await db.schema.createTable('accounts')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('name', text, (c) => c.notNull().unique())
        .addColumn('status', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createTable('users')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull().references('accounts.id').onDelete('cascade'))
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('is_admin', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('policy', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addUniqueConstraint('users_account_name', ['account_id', 'name'])
        .execute();
      await db.schema.createTable('access_keys')
        .addColumn('access_key_id', text, (c) => c.primaryKey())
        .addColumn('secret_access_key', text, (c) => c.notNull())
        .addColumn('user_id', text, (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('status', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createTable('zones')
        .addColumn('name', text, (c) => c.primaryKey())
        .addColumn('region', text, (c) => c.notNull())
        .addColumn('cidr', text, (c) => c.notNull())
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('zone_id', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createTable('key_pairs')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('key_type', text, (c) => c.notNull())
        .addColumn('fingerprint', text, (c) => c.notNull())
        .addColumn('public_key', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addUniqueConstraint('key_pairs_account_name', ['account_id', 'name'])
        .execute();
      await db.schema.createTable('vpcs')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('cidr', text, (c) => c.notNull())
        .addColumn('is_default', 'integer', (c) => c.notNull())
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('dhcp_options_id', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('vpcs_account').on('vpcs').column('account_id').execute();
      await db.schema.createTable('subnets')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('vpc_id', text, (c) => c.notNull().references('vpcs.id').onDelete('cascade'))
        .addColumn('zone', text, (c) => c.notNull())
        .addColumn('cidr', text, (c) => c.notNull())
        .addColumn('default_for_az', 'integer', (c) => c.notNull())
        .addColumn('map_public_ip_on_launch', 'integer', (c) => c.notNull())
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('subnets_account').on('subnets').column('account_id').execute();
      await db.schema.createTable('security_groups')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('vpc_id', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('description', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addUniqueConstraint('security_groups_vpc_name', ['account_id', 'vpc_id', 'name'])
        .execute();
      await db.schema.createTable('security_group_rules')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('group_id', text, (c) => c.notNull().references('security_groups.id').onDelete('cascade'))
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('is_egress', 'integer', (c) => c.notNull())
        .addColumn('ip_protocol', text, (c) => c.notNull())
        .addColumn('from_port', 'integer')
        .addColumn('to_port', 'integer')
        .addColumn('cidr_ipv4', text)
        .addColumn('cidr_ipv6', text)
        .addColumn('prefix_list_id', text)
        .addColumn('referenced_group_id', text)
        .addColumn('referenced_account_id', text)
        .addColumn('description', text)
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('sg_rules_group').on('security_group_rules').column('group_id').execute();
      await db.schema.createIndex('sg_rules_referenced').on('security_group_rules').column('referenced_group_id').execute();
      await db.schema.createTable('tags')
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('resource_id', text, (c) => c.notNull())
        .addColumn('resource_type', text, (c) => c.notNull())
        .addColumn('key', text, (c) => c.notNull())
        .addColumn('value', text, (c) => c.notNull())
        .addPrimaryKeyConstraint('tags_pk', ['resource_id', 'key'])
        .execute();
      await db.schema.createIndex('tags_account').on('tags').column('account_id').execute();
    },
  },
  '0002-images-vm-types-instances': {
    async up(db: Kysely<any>) {
      await db.schema.createTable('images')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('name', text, (c) => c.notNull())
        .addColumn('description', text)
        .addColumn('kind', text, (c) => c.notNull())
        .addColumn('architecture', text, (c) => c.notNull())
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('is_public', 'integer', (c) => c.notNull())
        .addColumn('kernel_id', text)
        .addColumn('ramdisk_id', text)
        .addColumn('root_device_name', text)
        .addColumn('kernel_cmdline', text)
        .addColumn('location', text, (c) => c.notNull())
        .addColumn('sha256', text, (c) => c.notNull())
        .addColumn('size_bytes', 'bigint', (c) => c.notNull())
        .addColumn('format', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createTable('vm_types')
        .addColumn('name', text, (c) => c.primaryKey())
        .addColumn('cores', 'integer', (c) => c.notNull())
        .addColumn('memory_mib', 'integer', (c) => c.notNull())
        .addColumn('disk_gib', 'integer', (c) => c.notNull())
        .addColumn('sort_order', 'integer', (c) => c.notNull())
        .execute();
      await db.schema.createTable('instances')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('reservation_id', text, (c) => c.notNull())
        .addColumn('client_token', text)
        .addColumn('request_hash', text)
        .addColumn('image_id', text, (c) => c.notNull())
        .addColumn('kernel_id', text)
        .addColumn('ramdisk_id', text)
        .addColumn('instance_type', text, (c) => c.notNull())
        .addColumn('zone', text, (c) => c.notNull())
        .addColumn('vpc_id', text, (c) => c.notNull())
        .addColumn('subnet_id', text, (c) => c.notNull())
        .addColumn('private_ip', text)
        .addColumn('public_ip', text)
        .addColumn('mac', text, (c) => c.notNull())
        .addColumn('key_name', text)
        .addColumn('user_data', text)
        .addColumn('security_groups', text, (c) => c.notNull())
        .addColumn('launch_index', 'integer', (c) => c.notNull())
        .addColumn('launch_time', text, (c) => c.notNull())
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('state_reason', text)
        .addColumn('state_changed_at', text, (c) => c.notNull())
        .addColumn('node_id', text)
        .addColumn('disable_api_termination', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('status_impaired', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('accelerator', text)
        .execute();
      await db.schema.createIndex('instances_account').on('instances').columns(['account_id', 'state']).execute();
      await db.schema.createIndex('instances_client_token').on('instances').columns(['account_id', 'client_token']).execute();
      // One address per zone among live instances; terminated instances give theirs up (NULL).
      await db.schema.createIndex('instances_zone_ip').on('instances').columns(['zone', 'private_ip']).unique().execute();
    },
  },
  '0003-clusters': {
    async up(db: Kysely<any>) {
      // The cluster controller of each zone the cloud reaches over the network, and its shared secret.
      await db.schema.createTable('clusters')
        .addColumn('zone', text, (c) => c.primaryKey())
        .addColumn('url', text, (c) => c.notNull())
        .addColumn('secret', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
    },
  },
  '0004-shutdown-behavior': {
    async up(db: Kysely<any>) {
      // InstanceInitiatedShutdownBehavior: instances launched before it existed stop, as they always did.
      await db.schema.alterTable('instances')
        .addColumn('shutdown_behavior', text, (c) => c.notNull().defaultTo('stop'))
        .execute();
    },
  },
  '0005-instances-by-state': {
    async up(db: Kysely<any>) {
      // The reconciler looks for long-terminated rows every second; without this it reads them all.
      await db.schema.createIndex('instances_state_changed').on('instances').columns(['state', 'state_changed_at']).execute();
    },
  },
  '0006-reboot-requests': {
    async up(db: Kysely<any>) {
      // A RebootInstances no cluster has acknowledged yet: the reconciler sends it again. Stops,
      // starts and terminations need no such record: the state they ask for is the row's own.
      await db.schema.alterTable('instances').addColumn('reboot_requested_at', text).execute();
    },
  },
  '0007-instance-metadata-options': {
    async up(db: Kysely<any>) {
      // RunInstances' MetadataOptions and ModifyInstanceMetadataOptions, as JSON; NULL means EC2's defaults.
      await db.schema.alterTable('instances').addColumn('metadata_options', text).execute();
    },
  },
  '0008-volumes': {
    async up(db: Kysely<any>) {
      // EBS volumes (src/cloud/storage/): what each volume should be and its one attachment, as asked;
      // the volume reconciler moves the transitional states once the zone's cluster has acted.
      await db.schema.createTable('volumes')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('zone', text, (c) => c.notNull())
        .addColumn('size_gib', 'integer', (c) => c.notNull())
        .addColumn('volume_type', text, (c) => c.notNull())
        .addColumn('iops', 'integer')
        .addColumn('throughput', 'integer')
        .addColumn('snapshot_id', text)
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addColumn('state_changed_at', text, (c) => c.notNull())
        .addColumn('auto_enable_io', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('instance_id', text)
        .addColumn('device', text)
        .addColumn('attach_state', text)
        .addColumn('attach_time', text)
        .addColumn('delete_on_termination', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('detach_force', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createIndex('volumes_account').on('volumes').columns(['account_id', 'state']).execute();
      await db.schema.createIndex('volumes_instance').on('volumes').columns(['instance_id']).execute();
      await db.schema.createTable('volume_modifications')
        .addColumn('volume_id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('status_message', text)
        .addColumn('original_size', 'integer', (c) => c.notNull())
        .addColumn('target_size', 'integer', (c) => c.notNull())
        .addColumn('original_type', text, (c) => c.notNull())
        .addColumn('target_type', text, (c) => c.notNull())
        .addColumn('original_iops', 'integer')
        .addColumn('target_iops', 'integer')
        .addColumn('progress', 'integer', (c) => c.notNull())
        .addColumn('start_time', text, (c) => c.notNull())
        .addColumn('end_time', text)
        .execute();
    },
  },
  '0008b-volume-client-token': {
    async up(db: Kysely<any>) {
      // CreateVolume's ClientToken (the SDKs send one with every call): a retry answers the same volume.
      await db.schema.alterTable('volumes').addColumn('client_token', text).execute();
      await db.schema.createIndex('volumes_client_token').on('volumes').columns(['account_id', 'client_token']).execute();
    },
  },
  '0009-addresses': {
    async up(db: Kysely<any>) {
      // Elastic IPs and launch-time public addresses (src/cloud/network/addresses*.ts), and the
      // public range of each zone they come from.
      await db.schema.createTable('public_ranges')
        .addColumn('zone', text, (c) => c.primaryKey())
        .addColumn('cidr', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createTable('addresses')
        .addColumn('public_ip', text, (c) => c.primaryKey())
        .addColumn('zone', text, (c) => c.notNull())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('allocation_id', text, (c) => c.unique())
        .addColumn('domain', text, (c) => c.notNull())
        .addColumn('instance_id', text)
        .addColumn('association_id', text, (c) => c.unique())
        .addColumn('private_ip', text)
        .addColumn('created_at', text, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('addresses_account').on('addresses').columns(['account_id']).execute();
      // One public address per instance (its one interface has one private address).
      await db.schema.createIndex('addresses_instance').on('addresses').columns(['instance_id']).unique().execute();
      // Copies of the instance's side of it, for DescribeInstances (public_ip is the address itself).
      await db.schema.alterTable('instances').addColumn('auto_public_ip', 'integer').execute();
      await db.schema.alterTable('instances').addColumn('public_ip_allocation_id', text).execute();
      await db.schema.alterTable('instances').addColumn('public_ip_association_id', text).execute();
    },
  },
  '0010-client-token-unique': {
    async up(db: Kysely<any>) {
      // One launch per (account, ClientToken), also when several controllers share PostgreSQL: every
      // launch has a row with launch index 0, so two launches of one token cannot both commit.
      // Earlier versions could let a race through: the earliest launch keeps the token (its
      // replays answer it), the others are kept as launches of their own.
      await sql`UPDATE instances SET client_token = NULL, request_hash = NULL
        WHERE client_token IS NOT NULL AND EXISTS (
          SELECT 1 FROM instances earlier
          WHERE earlier.account_id = instances.account_id AND earlier.client_token = instances.client_token
            AND (earlier.launch_time < instances.launch_time
              OR (earlier.launch_time = instances.launch_time AND earlier.reservation_id < instances.reservation_id)))`.execute(db);
      await db.schema.dropIndex('instances_client_token').ifExists().execute();
      await db.schema.createIndex('instances_client_token').on('instances')
        .columns(['account_id', 'client_token', 'launch_index']).unique().execute();
    },
  },
  '0011-image-launch-permissions': {
    async up(db: Kysely<any>) {
      // Images shared with other accounts (ModifyImageAttribute launchPermission), and how an
      // imported image boots when it carries its own boot loader (NULL: the cloud's kernel).
      await db.schema.createTable('image_launch_permissions')
        .addColumn('image_id', text, (c) => c.notNull())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addPrimaryKeyConstraint('image_launch_permissions_pk', ['image_id', 'account_id'])
        .execute();
      await db.schema.createIndex('image_launch_permissions_account').on('image_launch_permissions').column('account_id').execute();
      await db.schema.alterTable('images').addColumn('boot_mode', text).execute();
    },
  },
  '0012-snapshots': {
    async up(db: Kysely<any>) {
      // EBS snapshots (src/cloud/storage/snapshots.ts) and who may make volumes from them.
      await db.schema.createTable('snapshots')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('volume_id', text, (c) => c.notNull())
        .addColumn('zone', text, (c) => c.notNull())
        .addColumn('volume_size_gib', 'integer', (c) => c.notNull())
        .addColumn('description', text, (c) => c.notNull())
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('progress', 'integer', (c) => c.notNull())
        .addColumn('state_message', text)
        .addColumn('source_snapshot_id', text)
        .addColumn('stored_bytes', 'bigint')
        .addColumn('started_at', text, (c) => c.notNull())
        .addColumn('completed_at', text)
        .addColumn('state_changed_at', text, (c) => c.notNull())
        .addColumn('deleted_at', text)
        .execute();
      await db.schema.createIndex('snapshots_account').on('snapshots').columns(['account_id', 'state']).execute();
      await db.schema.createIndex('snapshots_state').on('snapshots').columns(['state']).execute();
      await db.schema.createTable('snapshot_volume_permissions')
        .addColumn('snapshot_id', text, (c) => c.notNull())
        .addColumn('grantee', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addPrimaryKeyConstraint('snapshot_volume_permissions_pk', ['snapshot_id', 'grantee'])
        .execute();
      await db.schema.createIndex('snapshot_volume_permissions_grantee').on('snapshot_volume_permissions').column('grantee').execute();
    },
  },
  '0013-ebs-images': {
    async up(db: Kysely<any>) {
      // EBS-backed images (src/cloud/images/ebs-images.ts): their block devices as EC2 lists them,
      // and the instances that boot from a volume made of them.
      await db.schema.alterTable('images').addColumn('root_device_type', text).execute();
      await db.schema.alterTable('images').addColumn('block_device_mappings', text).execute();
      await db.schema.alterTable('images').addColumn('source_instance_id', text).execute();
      await db.schema.alterTable('instances').addColumn('root_volume_id', text).execute();
    },
  },
  '0014-instance-events': {
    async up(db: Kysely<any>) {
      // Scheduled events (DescribeInstanceStatus Events): the operator's maintenance of a node,
      // told to the users of its instances and carried out at its time.
      await db.schema.createTable('instance_events')
        .addColumn('id', text, (c) => c.primaryKey())
        .addColumn('instance_id', text, (c) => c.notNull())
        .addColumn('account_id', text, (c) => c.notNull())
        .addColumn('zone', text, (c) => c.notNull())
        .addColumn('node_id', text, (c) => c.notNull())
        .addColumn('code', text, (c) => c.notNull())
        .addColumn('description', text, (c) => c.notNull())
        .addColumn('not_before', text, (c) => c.notNull())
        .addColumn('not_after', text)
        .addColumn('not_before_deadline', text)
        .addColumn('state', text, (c) => c.notNull())
        .addColumn('created_at', text, (c) => c.notNull())
        .addColumn('ended_at', text)
        .execute();
      await db.schema.createIndex('instance_events_instance').on('instance_events').columns(['instance_id', 'state']).execute();
      await db.schema.createIndex('instance_events_due').on('instance_events').columns(['state', 'not_before']).execute();
    },
  },
};
