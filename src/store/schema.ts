// Row types of the state store. Timestamps are ISO-8601 strings and booleans are 0/1 integers,
// so the same rows and queries work on SQLite and PostgreSQL.

export interface AccountsTable {
  id: string;            // 12 digits
  name: string;          // unique
  status: string;        // active | disabled
  created_at: string;
}

export interface UsersTable {
  id: string;            // AIDA + 17 chars
  account_id: string;
  name: string;          // unique per account; "admin" is the account's root user
  is_admin: number;
  /** JSON array of allowed action patterns, e.g. ["ec2:*"] or ["ec2:Describe*"]. */
  policy: string;
  created_at: string;
}

export interface AccessKeysTable {
  access_key_id: string; // AKIA + 16 chars
  secret_access_key: string;
  user_id: string;
  account_id: string;
  status: string;        // Active | Inactive
  created_at: string;
}

export interface ZonesTable {
  name: string;          // availability zone name, e.g. ironbark-1a
  region: string;
  cidr: string;          // the zone's private network; also the default subnet's range
  state: string;         // available | impaired | unavailable
  zone_id: string;       // e.g. ibk1-az1
  created_at: string;
}

export interface KeyPairsTable {
  id: string;            // key-
  account_id: string;
  name: string;
  key_type: string;      // rsa | ed25519
  fingerprint: string;
  public_key: string;    // OpenSSH one-line form
  created_at: string;
}

export interface VpcsTable {
  id: string;            // vpc-
  account_id: string;
  cidr: string;
  is_default: number;
  state: string;
  dhcp_options_id: string;
  created_at: string;
}

export interface SubnetsTable {
  id: string;            // subnet-
  account_id: string;
  vpc_id: string;
  zone: string;
  cidr: string;
  default_for_az: number;
  map_public_ip_on_launch: number;
  state: string;
  created_at: string;
}

export interface SecurityGroupsTable {
  id: string;            // sg-
  account_id: string;
  vpc_id: string;
  name: string;
  description: string;
  created_at: string;
}

export interface SecurityGroupRulesTable {
  id: string;            // sgr-
  group_id: string;
  account_id: string;
  is_egress: number;
  ip_protocol: string;   // tcp | udp | icmp | icmpv6 | -1 | protocol number
  from_port: number | null;
  to_port: number | null;
  cidr_ipv4: string | null;
  cidr_ipv6: string | null;
  prefix_list_id: string | null;
  referenced_group_id: string | null;
  referenced_account_id: string | null;
  description: string | null;
  created_at: string;
}

export interface TagsTable {
  account_id: string;
  resource_id: string;
  resource_type: string; // EC2 resource type: instance, key-pair, security-group, vpc, ...
  key: string;
  value: string;
}

export interface SettingsTable {
  key: string;
  value: string;
}

export interface Database {
  accounts: AccountsTable;
  users: UsersTable;
  access_keys: AccessKeysTable;
  zones: ZonesTable;
  key_pairs: KeyPairsTable;
  vpcs: VpcsTable;
  subnets: SubnetsTable;
  security_groups: SecurityGroupsTable;
  security_group_rules: SecurityGroupRulesTable;
  tags: TagsTable;
  settings: SettingsTable;
  images: ImagesTable;
  vm_types: VmTypesTable;
  instances: InstancesTable;
  clusters: ClustersTable;
  image_launch_permissions: ImageLaunchPermissionsTable;
  volumes: VolumesTable;
  volume_modifications: VolumeModificationsTable;
  snapshots: SnapshotsTable;
  snapshot_volume_permissions: SnapshotVolumePermissionsTable;
  public_ranges: PublicRangesTable;
  addresses: AddressesTable;
  instance_events: InstanceEventsTable;
}

/** A scheduled event of an instance (src/cloud/compute/instance-events.ts), set by the operator for the instances of a node. */
export interface InstanceEventsTable {
  id: string;                 // instance-event-…
  instance_id: string;
  account_id: string;
  zone: string;
  node_id: string;            // the node whose maintenance it is for
  code: string;               // instance-reboot | system-reboot | system-maintenance | instance-retirement | instance-stop
  description: string;
  not_before: string;         // ISO 8601
  not_after: string | null;
  not_before_deadline: string | null; // latest time users may move it to; NULL: they cannot
  state: string;              // scheduled | completed | canceled
  created_at: string;
  ended_at: string | null;
}

/** The public IPv4 block the operator gives a zone: elastic IPs and launch-time public addresses come from it. */
export interface PublicRangesTable {
  zone: string;          // one range per zone
  cidr: string;
  created_at: string;
}

/** A public address held by an account: an elastic IP (allocation_id set), or one given at launch (NULL). */
export interface AddressesTable {
  public_ip: string;
  zone: string;          // the zone whose public range it comes from
  account_id: string;
  allocation_id: string | null;  // eipalloc-
  domain: string;        // vpc
  instance_id: string | null;
  association_id: string | null; // eipassoc- (elastic IPs only)
  private_ip: string | null;
  created_at: string;
}

export interface ImagesTable {
  id: string;            // ami- | aki- | ari-
  account_id: string;    // owner; public images are visible to every account
  name: string;
  description: string | null;
  kind: string;          // machine | kernel | ramdisk
  architecture: string;  // x86_64
  state: string;         // available | pending | failed | deregistered
  is_public: number;
  kernel_id: string | null;
  ramdisk_id: string | null;
  root_device_name: string | null;
  kernel_cmdline: string | null;
  location: string;      // path of the image file in the cloud's data directory
  sha256: string;
  size_bytes: number;
  format: string;        // raw | qcow2
  created_at: string;
  boot_mode: string | null; // legacy-bios | uefi: boots from its own disk; NULL: kernel (+ ramdisk) given by the cloud
  /** ebs: the root disk is a volume made from a snapshot (block_device_mappings); NULL: instance-store. */
  root_device_type?: string | null;
  /** EC2's BlockDeviceMappings of an EBS-backed image, as JSON (images/ebs-images.ts). */
  block_device_mappings?: string | null;
  /** CreateImage: the instance it was made of. */
  source_instance_id?: string | null;
}

/** An account other than the owner that may see and launch an image (launchPermission UserId); group `all` is images.is_public. */
export interface ImageLaunchPermissionsTable {
  image_id: string;
  account_id: string;
  created_at: string;
}

export interface VmTypesTable {
  name: string;
  cores: number;
  memory_mib: number;
  disk_gib: number;
  sort_order: number;
}

export interface InstancesTable {
  id: string;
  account_id: string;
  reservation_id: string;
  client_token: string | null;
  request_hash: string | null;
  image_id: string;
  kernel_id: string | null;
  ramdisk_id: string | null;
  instance_type: string;
  zone: string;
  vpc_id: string;
  subnet_id: string;
  private_ip: string | null;
  public_ip: string | null;
  mac: string;
  key_name: string | null;
  user_data: string | null;     // base64
  security_groups: string;      // JSON [{id, name}]
  launch_index: number;
  launch_time: string;
  state: string;                // pending | running | stopping | stopped | shutting-down | terminated
  state_reason: string | null;
  state_changed_at: string;
  node_id: string | null;
  disable_api_termination: number;
  status_impaired: number;
  accelerator: string | null;
  shutdown_behavior: string;    // stop | terminate: what a guest powering itself off leads to
  /** When a RebootInstances was asked that no cluster has acknowledged yet (optional: NULL by default). */
  reboot_requested_at?: string | null;
  /** MetadataOptions as JSON (instance-metadata-options.ts); NULL: EC2's defaults. */
  metadata_options?: string | null;
  /** 1 when the launch gave the interface a public address (it gets a new one after an elastic IP leaves it). */
  auto_public_ip?: number | null;
  /** The elastic IP the instance's public_ip is, when it is one (NULL: a launch-time address, or none). */
  public_ip_allocation_id?: string | null;
  public_ip_association_id?: string | null;
  /** The EBS volume the instance boots from (an EBS-backed image); NULL: a local overlay. */
  root_volume_id?: string | null;
}

export interface ClustersTable {
  zone: string;          // the availability zone the cluster controller serves
  url: string;           // base URL of its cluster API, as the cloud reaches it
  secret: string;        // shared secret that signs every cloud <-> cluster message
  created_at: string;
}

export interface VolumesTable {
  id: string;            // vol-
  account_id: string;
  zone: string;
  size_gib: number;
  volume_type: string;   // gp2 | gp3 | io1 | io2 | st1 | sc1 | standard: accepted and reported
  iops: number | null;
  throughput: number | null;
  snapshot_id: string | null;
  /** creating | available | in-use | deleting | deleted | error (EC2's volume states). */
  state: string;
  created_at: string;
  state_changed_at: string;
  auto_enable_io: number;
  /** The one attachment (no multi-attach): the instance, EC2 device name and attachment state. */
  instance_id: string | null;
  device: string | null;
  attach_state: string | null;   // attaching | attached | detaching
  attach_time: string | null;
  delete_on_termination: number;
  /** A DetachVolume with Force=true still under way. */
  detach_force: number;
  /** CreateVolume's ClientToken (optional: NULL by default). */
  client_token?: string | null;
}

/** An EBS snapshot (src/cloud/storage/snapshots.ts); its data is kept by the storage of `zone`. */
export interface SnapshotsTable {
  id: string;            // snap-
  account_id: string;    // the owner
  /** The volume it was taken of (vol-ffffffff for a copy, as EC2 shows it). */
  volume_id: string;
  /** The zone whose storage holds its data (the source volume's zone). */
  zone: string;
  volume_size_gib: number;
  description: string;
  /** pending | completed | error (EC2's), then deleting | deleted (no longer shown). */
  state: string;
  progress: number;      // percent
  state_message: string | null;
  /** CopySnapshot: the snapshot the data comes from (NULL: taken of volume_id). */
  source_snapshot_id: string | null;
  /** Bytes the storage holds for it beyond the snapshots before it (NULL until completed). */
  stored_bytes: number | null;
  started_at: string;
  completed_at: string | null;
  state_changed_at: string;
  /** When it was deleted (kept a while for the usage report's GiB-hours). */
  deleted_at: string | null;
}

/** createVolumePermission of a snapshot: an account id, or `all` (public). */
export interface SnapshotVolumePermissionsTable {
  snapshot_id: string;
  grantee: string;
  created_at: string;
}

export interface VolumeModificationsTable {
  volume_id: string;     // one row per volume: its latest modification
  account_id: string;
  state: string;         // modifying | optimizing | completed | failed
  status_message: string | null;
  original_size: number;
  target_size: number;
  original_type: string;
  target_type: string;
  original_iops: number | null;
  target_iops: number | null;
  progress: number;
  start_time: string;
  end_time: string | null;
}
