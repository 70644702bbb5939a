// The `ironbark` command: every role and the operator's tools from one binary.
import { Command, Option } from 'commander';
import { runUp } from './up.ts';
import { registerAdminCommands } from './admin.ts';

const program = new Command();
program.name('ironbark').description('An open-source private cloud that speaks the Amazon EC2 API');

program.command('up')
  .description('run the cloud, cluster and node controllers on this host, in the foreground')
  .option('--data-dir <dir>', 'where state, images and credentials live', process.env.IRONBARK_DATA_DIR ?? '/var/lib/ironbark')
  .option('--listen <host:port>', 'address of the EC2 endpoint', '127.0.0.1:8773')
  .option('--store <url>', 'postgres://… to share state between controllers (default: SQLite in the data directory)')
  .option('--region <name>', 'region name the cloud answers as', 'ironbark-1')
  .option('--zone <name>', 'availability zone of this host (default: <region>a)')
  .option('--zone-cidr <cidr>', 'private network of the zone', '10.1.0.0/16')
  .addOption(new Option('--driver <driver>', 'hypervisor driver').choices(['qemu', 'fake']).default('qemu'))
  .action(async (opts) => { await runUp(opts); });

registerAdminCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`ironbark: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
