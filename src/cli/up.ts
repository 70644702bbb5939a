// `ironbark up`: the all-in-one cloud on one host, in the foreground, for a first try.
import { resolve } from 'node:path';
import { createLogger } from './logger.ts';
import { parseListenAddress } from './listen-address.ts';
import { startCloudController } from '../cloud/cloud-controller.ts';
import { ensureZone } from '../cloud/provision.ts';

export interface UpOptions {
  dataDir: string;
  listen: string;
  store?: string;
  region: string;
  zone?: string;
  zoneCidr: string;
  driver: string;
}

export async function runUp(opts: UpOptions): Promise<void> {
  const log = createLogger('up');
  const { host, port } = parseListenAddress(opts.listen);
  const dataDir = resolve(opts.dataDir);
  const cloud = await startCloudController({ dataDir, host, port, storeUrl: opts.store, region: opts.region, log });
  const zone = opts.zone ?? `${opts.region}a`;
  await ensureZone(cloud.store, { name: zone, cidr: opts.zoneCidr, region: opts.region });

  const out = process.stdout;
  out.write(`Ironbark is up: EC2 endpoint ${cloud.url} (region ${opts.region}, zone ${zone})\n\n`);
  out.write(`Credentials of the admin account ${cloud.admin.accountId} (also in ${dataDir}/credentials.env):\n`);
  out.write(`  export AWS_ACCESS_KEY_ID=${cloud.admin.accessKeyId}\n`);
  out.write(`  export AWS_SECRET_ACCESS_KEY=${cloud.admin.secretAccessKey}\n`);
  out.write(`  export AWS_DEFAULT_REGION=${opts.region}\n`);
  out.write(`  export AWS_ENDPOINT_URL_EC2=${cloud.url}\n\n`);
  out.write(`An aws CLI profile is in ${dataDir}/aws-config. Try: aws ec2 describe-availability-zones --endpoint-url ${cloud.url}\n`);

  await new Promise<void>((resolveStop) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping');
      cloud.close().then(resolveStop, (err) => { log.error({ err }, 'error while stopping'); resolveStop(); });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
