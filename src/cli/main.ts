// The `ironbark` command: every role and the operator's tools from one binary.
import { Command, Option } from 'commander';
import { runUp } from './up.ts';
import { registerAdminCommands } from './admin.ts';
import { registerRoleCommands, STOP_TIMEOUT_HELP, stopTimeoutOption } from './roles.ts';
import { registerClusterAdminCommands } from './admin-clusters-cli.ts';
import { registerMasterKeyCommands } from './master-key-cli.ts';
import { registerRateLimitAdminCommands } from './admin-rate-limits-cli.ts';
import { registerPublicRangeAdminCommands } from './admin-public-ranges-cli.ts';
import { addPowerFlags } from './power-options.ts';
import { addRequestLimitFlag } from './request-limit-option.ts';
import { registerImageCommands } from './image-cli.ts';
import { registerImageAdminCommands } from './admin-images-cli.ts';
import { registerEventAdminCommands } from './admin-events-cli.ts';
import { addGuestImageOption } from './guest-image-option.ts';

const program = new Command();
program.name('ironbark').description('An open-source private cloud that speaks the Amazon EC2 API');

const up = program.command('up')
  .description('run the cloud, cluster and node controllers on this host, in the foreground')
  .option('--data-dir <dir>', 'where state, images and credentials live', process.env.IRONBARK_DATA_DIR ?? '/var/lib/ironbark')
  .option('--listen <host:port>', 'address of the EC2 endpoint', '127.0.0.1:8773')
  .option('--store <url>', 'postgres://… to share state between controllers (default: SQLite in the data directory)')
  .option('--region <name>', 'region name the cloud answers as', 'ironbark-1')
  .option('--zone <name>', 'availability zone of this host (default: <region>a)')
  .option('--zone-cidr <cidr>', 'private network of the zone', '10.1.0.0/16')
  .option('--public-range <cidr>', "public IPv4 range of the zone (elastic IPs, launch-time public addresses), routed by you to this host, e.g. 203.0.113.0/24")
  .addOption(new Option('--driver <driver>', 'hypervisor driver: qemu runs real VMs, fake simulates them').choices(['qemu', 'fake']).default('qemu'))
  .option('--policy <policy>', 'allocation policy: greedy, round-robin, power-save, module:PATH or exec:PATH', 'round-robin')
  .option('--node-cores <n>', 'cores this host (each simulated node) offers to instances (default: 4 per CPU for qemu, 256 for fake)')
  .option('--node-memory <mib>', 'memory this host (each simulated node) offers to instances, MiB (default: all of it for qemu, 1 TiB for fake)')
  .option('--node-disk <gib>', 'disk this host (each simulated node) offers to instances, GiB')
  .option('--nodes <n>', 'simulated nodes to run in this process, with --driver fake (default 1)')
  .option('--stop-timeout <seconds>', STOP_TIMEOUT_HELP, stopTimeoutOption)
  .option('--image-cache <dir>', 'where built guest images are cached (default ~/.cache/ironbark/images)')
  .option('--master-key-file <path>', 'key file that encrypts the secrets in the store (default: $IRONBARK_MASTER_KEY_FILE, else master.key in the data directory, made at first start)');
addGuestImageOption(addRequestLimitFlag(addPowerFlags(up))).action(async (opts) => { await runUp(opts); });

registerRoleCommands(program);
registerImageCommands(program);
const admin = registerAdminCommands(program);
registerClusterAdminCommands(admin);
registerMasterKeyCommands(admin);
registerRateLimitAdminCommands(admin);
registerPublicRangeAdminCommands(admin);
registerImageAdminCommands(admin);
registerEventAdminCommands(admin);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`ironbark: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
