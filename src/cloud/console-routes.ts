// The operator's web console (src/console/: plain HTML, CSS and ES modules, no build step),
// served by the cloud controller under /console. The console holds no secret of its own: it signs
// admin API calls in the browser with the key the operator pastes in. /console/config.json tells
// it the cloud's region, the only setting it needs that the page cannot know.
import { readFile } from 'node:fs/promises';
import { extname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context, Hono } from 'hono';

export const CONSOLE_DIR = fileURLToPath(new URL('../console/', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

// The console changes with the cloud it ships with: browsers must revalidate on every load.
const NO_CACHE = { 'cache-control': 'no-cache' };

function notFound(c: Context): Response {
  return c.text('Not Found', 404, NO_CACHE);
}

/**
 * The file under CONSOLE_DIR that a path below /console/ names, or undefined. Each segment is
 * decoded on its own so that an encoded '/', '\' or '..' can never climb out of the folder.
 */
function consoleFile(rest: string): string | undefined {
  const segments: string[] = [];
  for (const raw of rest.split('/')) {
    let seg: string;
    try {
      seg = decodeURIComponent(raw);
    } catch {
      return undefined;
    }
    if (seg === '' || seg.startsWith('.') || /[/\\\0]/.test(seg)) return undefined;
    segments.push(seg);
  }
  if (segments.length === 0 || !Object.hasOwn(CONTENT_TYPES, extname(segments[segments.length - 1]!))) return undefined;
  const file = join(CONSOLE_DIR, ...segments);
  return file.startsWith(CONSOLE_DIR.endsWith(sep) ? CONSOLE_DIR : CONSOLE_DIR + sep) ? file : undefined;
}

async function serveFile(c: Context, file: string): Promise<Response> {
  let content: Buffer;
  try {
    content = await readFile(file);
  } catch {
    return notFound(c);
  }
  return c.body(new Uint8Array(content), 200, { 'content-type': CONTENT_TYPES[extname(file)]!, ...NO_CACHE });
}

export function mountConsole(app: Hono, region: string): void {
  const index = (c: Context) => serveFile(c, join(CONSOLE_DIR, 'index.html'));
  app.get('/console', index);
  app.get('/console/', index);
  app.get('/console/config.json', (c) => c.json({ region }, 200, NO_CACHE));
  app.get('/console/*', (c) => {
    // The raw path, as sent: Hono's decoded path would hide an encoded '/' inside a segment.
    const rawPath = c.req.url.replace(/^[a-z]+:\/\/[^/]+/i, '').replace(/[?#].*$/, '');
    const file = rawPath.startsWith('/console/') ? consoleFile(rawPath.slice('/console/'.length)) : undefined;
    return file === undefined ? notFound(c) : serveFile(c, file);
  });
}
