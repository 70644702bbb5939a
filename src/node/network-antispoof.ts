// Anti-spoofing on a zone bridge: each instance port may only send frames from its own MAC and
// packets from its own reserved IP. The metadata service identifies an instance by its source
// address, so without this one guest could read another's data by borrowing its IP.
import { runCommand, HostCommandError } from './network-commands.ts';

export interface PortBinding {
  tapName: string;
  mac: string;
  ip: string;
}

function chainName(tapName: string): string {
  return 'port_' + tapName.replace(/[^a-zA-Z0-9_]/g, '_');
}

export function renderAntiSpoofTable(table: string, ports: PortBinding[]): string {
  const sorted = [...ports].sort((a, b) => a.tapName.localeCompare(b.tapName));
  const chains = sorted.map(
    (p) => `  chain ${chainName(p.tapName)} {
    ether saddr != ${p.mac} drop
    ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept
    ether type ip ip saddr != ${p.ip} drop
    ether type arp arp saddr ether != ${p.mac} drop
    ether type arp arp saddr ip != { 0.0.0.0, ${p.ip} } drop
    ether type != { ip, arp } drop
  }
`,
  );
  const dispatch = sorted.length
    ? `    iifname vmap { ${sorted.map((p) => `"${p.tapName}" : jump ${chainName(p.tapName)}`).join(', ')} }\n`
    : '';
  // Declaring, deleting and re-creating the table in one `nft -f` transaction replaces it atomically.
  return `table bridge ${table} {}
delete table bridge ${table}
table bridge ${table} {
${chains.join('')}  chain prerouting {
    type filter hook prerouting priority filter; policy accept;
${dispatch}  }
}
`;
}

export async function removeAntiSpoofTable(table: string, netns?: string): Promise<void> {
  try {
    await runCommand('nft', ['delete', 'table', 'bridge', table], { netns });
  } catch (e) {
    if (e instanceof HostCommandError && /No such file or directory/.test(e.stderr)) return;
    throw e;
  }
}
