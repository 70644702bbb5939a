// The admin API as the console calls it: signed JSON requests to `<endpoint>/admin/v1/...`.
// Error answers (`{ "error": { code, message } }`) become AdminApiError with the API's message.
import { signRequest, uriEncode } from './sigv4.js';

export class AdminApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.name = 'AdminApiError';
    this.code = code;
    this.status = status;
  }
}

/** A path from segments, each encoded: `path('accounts', id, 'users')` -> `/accounts/123/users`. */
export function path(...segments) {
  return segments.map((s) => `/${uriEncode(String(s))}`).join('');
}

export class AdminApi {
  /** @param {{ endpoint: string, accessKeyId: string, secretAccessKey: string, region: string }} config */
  constructor(config) {
    this.config = config;
  }

  get(p, query) { return this.request('GET', p, { query }); }
  post(p, body) { return this.request('POST', p, { body: body ?? {} }); }
  put(p, body) { return this.request('PUT', p, { body }); }
  delete(p) { return this.request('DELETE', p); }

  /** Sends a signed request and returns the JSON answer; throws AdminApiError for an error answer. */
  async request(method, p, options = {}) {
    const base = this.config.endpoint.replace(/\/+$/, '');
    const query = Object.entries(options.query ?? {}).filter(([, v]) => v !== undefined && v !== '')
      .map(([k, v]) => `${uriEncode(k)}=${uriEncode(String(v))}`).join('&');
    const url = `${base}/admin/v1${p}${query ? `?${query}` : ''}`;
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const headers = await signRequest({
      method, url, body,
      accessKeyId: this.config.accessKeyId, secretAccessKey: this.config.secretAccessKey, region: this.config.region,
    });
    let response;
    try {
      response = await fetch(url, { method, headers, body, cache: 'no-store' });
    } catch (err) {
      throw new AdminApiError('NetworkError', `Cannot reach the cloud at ${base}: ${err.message}`, 0);
    }
    const text = await response.text();
    let json;
    try {
      json = text === '' ? {} : JSON.parse(text);
    } catch {
      throw new AdminApiError('InvalidResponse', `The cloud answered ${method} ${p} with HTTP ${response.status} and no JSON.`, response.status);
    }
    if (!response.ok) {
      const err = json?.error ?? {};
      throw new AdminApiError(String(err.code ?? `HTTP${response.status}`), String(err.message ?? `The request failed with HTTP ${response.status}.`), response.status);
    }
    return json;
  }
}
