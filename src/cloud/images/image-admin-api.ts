// The operator's image routes on the admin API (conventions: src/cloud/admin-api.ts):
//   POST /v1/image-imports {path, name, description?, architecture?, bootMode?, account?, public?, maxSizeGiB?}
//        checks the file at once (400 with the reason, nothing made) and answers 202 with an
//        import that copies and registers in the background;
//   GET  /v1/image-imports/:id   the import's phase, bytes copied, and its image id once done;
//   GET  /v1/images[?account=]   every image of the cloud (or of one account), any owner.
// The file must be readable by the cloud controller's host; the image goes to <dataDir>/imported-images/.
// Imports are kept in memory: after a controller restart an unfinished one is gone and its
// partial copy (<id>.partial) is removed at the next start of the API.
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { Store } from '../../store/store.ts';
import type { KeyResolver } from '../../auth/authenticate.ts';
import { Ec2Error } from '../../protocol/errors.ts';
import { newAdminApp, readJsonObject, requiredString } from '../admin-api.ts';
import { cloudAdminAccountId } from '../admin-auth.ts';
import { checkImport, importImage, type ImageImportProgress } from './image-import.ts';
import { DEFAULT_MAX_IMPORT_GIB, GiB } from './disk-image-check.ts';

export interface ImageAdminApiDeps {
  store: Store;
  keys: KeyResolver;
  log: Pick<Logger, 'error' | 'info'>;
  /** Where imported image files are kept. */
  imagesDir: string;
}

interface ImportJob {
  id: string;
  path: string;
  name: string;
  accountId: string;
  public: boolean;
  progress: ImageImportProgress;
  imageId?: string;
  error?: { code: string; message: string };
  startedAt: string;
}

function jobView(j: ImportJob) {
  return {
    id: j.id, path: j.path, name: j.name, accountId: j.accountId, public: j.public, phase: j.progress.phase,
    copiedBytes: j.progress.copiedBytes, totalBytes: j.progress.totalBytes, startedAt: j.startedAt,
    ...(j.imageId ? { imageId: j.imageId } : {}), ...(j.error ? { error: j.error } : {}),
  };
}

async function accountByRef(store: Store, ref: string): Promise<string> {
  const row = await store.db.selectFrom('accounts').select('id')
    .where((eb) => eb.or([eb('id', '=', ref), eb('name', '=', ref)])).executeTakeFirst();
  if (!row) throw new Ec2Error('InvalidAccount.NotFound', `There is no account ${ref}.`, 404);
  return row.id;
}

function optionalString(body: Record<string, unknown>, name: string): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new Ec2Error('InvalidParameterValue', `The parameter ${name} must be a string.`);
  return v;
}

export function createImageAdminApi(deps: ImageAdminApiDeps) {
  const app = newAdminApp(deps);
  const jobs = new Map<string, ImportJob>();
  // Copies a controller stopped in the middle of are worth nothing: no row names them.
  void readdir(deps.imagesDir).then((names) => Promise.all(names.filter((n) => n.endsWith('.partial'))
    .map((n) => rm(join(deps.imagesDir, n), { force: true })))).catch(() => undefined);

  app.post('/v1/image-imports', async (c) => {
    const body = await readJsonObject(c);
    const path = requiredString(body, 'path');
    if (!path.startsWith('/')) throw new Ec2Error('InvalidParameterValue', `The path ${path} must be absolute (a file on the cloud controller's host).`);
    const name = requiredString(body, 'name');
    const account = optionalString(body, 'account');
    const ownerAccountId = account ? await accountByRef(deps.store, account) : await cloudAdminAccountId(deps.store);
    if (!ownerAccountId) throw new Ec2Error('InternalError', 'The cloud has no admin account yet.', 500);
    const isPublic = body.public === undefined ? false : body.public;
    if (typeof isPublic !== 'boolean') throw new Ec2Error('InvalidParameterValue', 'The parameter public must be true or false.');
    const maxSizeGiB = body.maxSizeGiB === undefined ? DEFAULT_MAX_IMPORT_GIB : body.maxSizeGiB;
    if (typeof maxSizeGiB !== 'number' || !(maxSizeGiB > 0) || !Number.isFinite(maxSizeGiB)) {
      throw new Ec2Error('InvalidParameterValue', `The parameter maxSizeGiB must be a positive number, not ${JSON.stringify(body.maxSizeGiB)}.`);
    }
    const checked = await checkImport(deps.store, {
      path, name, description: optionalString(body, 'description'), architecture: optionalString(body, 'architecture'),
      bootMode: optionalString(body, 'bootMode'), ownerAccountId, public: isPublic, maxBytes: Math.floor(maxSizeGiB * GiB),
    });
    const job: ImportJob = {
      id: `import-${randomBytes(8).toString('hex')}`, path, name, accountId: ownerAccountId, public: isPublic,
      progress: { phase: 'checking', copiedBytes: 0, totalBytes: checked.facts.fileSizeBytes }, startedAt: new Date().toISOString(),
    };
    jobs.set(job.id, job);
    importImage(deps.store, checked, { imagesDir: deps.imagesDir, onProgress: (p) => { job.progress = p; } }).then((imageId) => {
      job.imageId = imageId;
      deps.log.info({ imageId, path, account: ownerAccountId }, 'image imported');
    }, (err: unknown) => {
      job.error = err instanceof Ec2Error ? { code: err.code, message: err.message } : { code: 'InternalError', message: (err as Error).message };
      job.progress = { ...job.progress, phase: 'failed' };
      deps.log.error({ err, path }, 'image import failed');
    });
    return c.json({ import: jobView(job) }, 202);
  });

  app.get('/v1/image-imports/:id', (c) => {
    const job = jobs.get(c.req.param('id'));
    if (!job) throw new Ec2Error('InvalidImportTaskId.NotFound', `There is no image import ${c.req.param('id')} (imports are forgotten when the cloud controller restarts).`, 404);
    return c.json({ import: jobView(job) });
  });

  app.get('/v1/images', async (c) => {
    const ref = c.req.query('account');
    let query = deps.store.db.selectFrom('images').selectAll().where('state', '!=', 'deregistered').orderBy('created_at').orderBy('id');
    if (ref) query = query.where('account_id', '=', await accountByRef(deps.store, ref));
    const rows = await query.execute();
    return c.json({
      images: rows.map((r) => ({
        id: r.id, name: r.name, accountId: r.account_id, kind: r.kind, state: r.state, public: r.is_public === 1,
        format: r.format, sizeBytes: Number(r.size_bytes), bootMode: r.boot_mode, kernelId: r.kernel_id, createdAt: r.created_at,
      })),
    });
  });

  return app;
}
