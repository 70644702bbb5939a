// `ironbark admin zone public-range ZONE [CIDR]` and `ironbark admin zone public-ranges`: the public
// IPv4 range of each zone, which elastic IPs and launch-time public addresses come from. The
// operator routes each zone's range to that zone's nodes (they NAT it to the instances).
import type { Command } from 'commander';
import { adminClientFor, formatTable, printResult } from './admin.ts';

interface RangeJson { zone: string; cidr: string; size: number; used: number; free: number }

const rangesTable = (ranges: RangeJson[]) => formatTable(['ZONE', 'PUBLIC RANGE', 'ADDRESSES', 'HELD', 'FREE'],
  ranges.map((r) => [r.zone, r.cidr, r.size, r.used, r.free]), '(no zone has a public range)');

export function registerPublicRangeAdminCommands(adminCommand: Command): void {
  const zone = adminCommand.command('zone').description("the availability zones' public address ranges");

  zone.command('public-range')
    .description("show, set or remove a zone's public range (elastic IPs and launch-time public addresses come from it)")
    .argument('<zone>', 'availability zone, e.g. ironbark-1a')
    .argument('[cidr]', 'the IPv4 block to give it, e.g. 203.0.113.0/24 (at most a /16), routed by you to the zone\'s nodes')
    .option('--remove', 'take the range away (refused while accounts hold addresses of it)')
    .action(async (name: string, cidr: string | undefined, opts: { remove?: boolean }, cmd: Command) => {
      const client = adminClientFor(cmd);
      const path = `/public-ranges/${encodeURIComponent(name)}`;
      if (opts.remove) {
        if (cidr !== undefined) throw new Error('Give either a CIDR to set or --remove, not both.');
        printResult(cmd, await client.request<{ deleted: string }>('DELETE', path), (a) => `Zone ${a.deleted} has no public range any more.`);
        return;
      }
      if (cidr === undefined) {
        const { publicRanges } = await client.request<{ publicRanges: RangeJson[] }>('GET', '/public-ranges');
        const found = publicRanges.find((r) => r.zone === name);
        printResult(cmd, { publicRange: found ?? null }, (a) => (a.publicRange ? rangesTable([a.publicRange]) : `Zone ${name} has no public range.`));
        return;
      }
      const answer = await client.request<{ publicRange: RangeJson }>('PUT', path, { body: { cidr } });
      printResult(cmd, answer, (a) => `Zone ${a.publicRange.zone} gives public addresses from ${a.publicRange.cidr} (${a.publicRange.free} of ${a.publicRange.size} free).\n` +
        `Route ${a.publicRange.cidr} to the zone's nodes, which NAT it to the instances.`);
    });

  zone.command('public-ranges')
    .description('list the zones that have a public range, with how many addresses accounts hold')
    .action(async (_opts: unknown, cmd: Command) => {
      const answer = await adminClientFor(cmd).request<{ publicRanges: RangeJson[] }>('GET', '/public-ranges');
      printResult(cmd, answer, (a) => rangesTable(a.publicRanges));
    });
}
