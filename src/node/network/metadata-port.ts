// How the metadata service knows which instance is asking: by the port (tap) the request came in on,
// not by the source address the guest wrote. Two tables per zone bridge, replaced whole at once:
//
// - `table bridge ib_md_<bridge>`: every frame that enters the bridge from an instance's tap gets
//   that tap's mark (bridge prerouting, where the port is still known).
// - `table ip ib_mdn_<bridge>`: a new connection to 169.254.169.254:80 from the bridge is
//   source-NATed to the address of the instance whose tap marked it. So the service (which keys its
//   answers on the client address it sees) always sees the asking tap's instance: a guest that writes
//   another's address as its source gets its own metadata, never the other's (and the anti-spoofing
//   table drops such packets before this anyway). A request that did not come from a known tap is
//   dropped.
//
// The host's own 169.254.169.254 is left alone: with `dnat`, the address is not put on the bridge
// at all (a host that is itself a cloud VM keeps reaching its own metadata service through its own
// route); requests from the bridge are destination-NATed to the service on the bridge's gateway
// address instead, and that address answers on port 80 only to such redirected requests.
import { firewallTableName } from '../network-addressing.ts';
import { HostCommandError, runCommand } from '../network-commands.ts';

const METADATA_ADDRESS = '169.254.169.254';
/** Marks of instance ports: this base plus the port's index (Ironbark's own range of mark values). */
const MARK_BASE = 0x1b0d0000;

export interface MetadataPort {
  tapName: string;
  ip: string;
}

export function metadataTableNames(bridgeName: string): { bridge: string; ip: string } {
  const rest = firewallTableName(bridgeName).replace(/^ib_/, '');
  return { bridge: `ib_md_${rest}`, ip: `ib_mdn_${rest}` };
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

/**
 * The tables of one bridge. `listen` is the service's address on this host when requests are
 * destination-NATed to it (the metadata address is then not on the bridge); absent, the service
 * listens on 169.254.169.254 on the bridge itself.
 */
export function renderMetadataTables(opts: { bridgeName: string; ports: MetadataPort[]; listen?: string }): string {
  const names = metadataTableNames(opts.bridgeName);
  const br = JSON.stringify(opts.bridgeName);
  const ports = [...opts.ports].sort((a, b) => (a.tapName < b.tapName ? -1 : a.tapName > b.tapName ? 1 : 0));
  const marks = ports.map((p, i) => ({ ...p, mark: hex(MARK_BASE + i + 1) }));
  const tapMarks = marks.map((p) => `${JSON.stringify(p.tapName)} : ${p.mark}`).join(', ');
  const markIps = marks.map((p) => `${p.mark} : ${p.ip}`).join(', ');
  const markSet = marks.map((p) => p.mark).join(', ');
  const bridgeTable = `table bridge ${names.bridge} {
  chain prerouting {
    type filter hook prerouting priority filter; policy accept;
${tapMarks ? `    meta mark set iifname map { ${tapMarks} }\n` : ''}  }
}
`;
  // The port is 80 before and after the redirection; only the address changes.
  const toService = `ct original ip daddr ${METADATA_ADDRESS} tcp dport 80`;
  const ipTable = `table ip ${names.ip} {
  map mark_ip {
    type mark : ipv4_addr;${markIps ? `\n    elements = { ${markIps} }` : ''}
  }
  set marks {
    type mark;${markSet ? `\n    elements = { ${markSet} }` : ''}
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
${opts.listen ? `    iifname ${br} ip daddr ${METADATA_ADDRESS} tcp dport 80 dnat to ${opts.listen}:80\n` : ''}  }
  chain snat_input {
    type nat hook input priority 100; policy accept;
    iifname ${br} ${toService} snat to meta mark map @mark_ip
  }
  chain filter_input {
    type filter hook input priority filter - 1; policy accept;
    iifname ${br} ${toService} meta mark != @marks drop
${opts.listen ? `    iifname ${br} ip daddr ${opts.listen} tcp dport 80 ct original ip daddr != ${METADATA_ADDRESS} drop\n` : ''}  }
}
`;
  return `table bridge ${names.bridge} {}\ndelete table bridge ${names.bridge}\n${bridgeTable}table ip ${names.ip} {}\ndelete table ip ${names.ip}\n${ipTable}`;
}

export async function removeMetadataTables(bridgeName: string, netns?: string): Promise<void> {
  const names = metadataTableNames(bridgeName);
  for (const [family, table] of [['bridge', names.bridge], ['ip', names.ip]] as const) {
    try {
      await runCommand('nft', ['delete', 'table', family, table], { netns });
    } catch (e) {
      if (!(e instanceof HostCommandError && /No such file or directory/.test(e.stderr))) throw e;
    }
  }
}
