// Test fixtures: a fresh server process per test, started from the built binary with the
// settings the test asks for, plus a guard that fails the test on any console error,
// uncaught page error or dialog (hydration errors and injected scripts show up there).
//
//   SERVER_BIN  the server executable (default ../target/debug/server)
//   SITE_ROOT   the folder with pkg/ (default ../target/site)
// Relative paths are resolved from the end2end/ folder.

import { test as base, expect, type Page } from '@playwright/test';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const END2END_DIR = path.resolve(__dirname, '..');
export const RESULTS_DIR = path.join(END2END_DIR, 'results');

const SERVER_BIN = path.resolve(END2END_DIR, process.env.SERVER_BIN ?? '../target/debug/server');
const SITE_ROOT = path.resolve(END2END_DIR, process.env.SITE_ROOT ?? '../target/site');
/** The server (and so, with `cargo leptos build --release`, the client) is a release build. */
export const IS_RELEASE = /[\\/]release[\\/]/.test(SERVER_BIN);
export const SERVER_BIN_PATH = SERVER_BIN;

export interface ServerOptions {
  /** EVENTS_TICK: `off` (the default here, so tests see only their own events), `500ms`, ... */
  tick?: string;
  /** EVENTS_PAGE_ROWS */
  pageRows?: number;
  /** EVENTS_TOPICS */
  topics?: string;
  /** EVENTS_MAX_TEXT */
  maxText?: number;
  /** EVENTS_DATA_DIR, for a test that restarts a server on the same history; by default
   *  each server gets a folder of its own, removed when it stops. */
  dataDir?: string;
  /** Any other variables. */
  env?: Record<string, string>;
}

export interface Published {
  id: number;
  topic: string;
  sent_ms: number;
}

export class Server {
  readonly logs: string[] = [];
  private exited: Promise<void>;
  private exitCode: number | null = null;

  constructor(
    readonly url: string,
    private readonly child: ChildProcess,
    /** A data folder this server owns: removed when it stops. */
    private readonly ownDataDir?: string,
  ) {
    const keep = (chunk: Buffer) => this.logs.push(chunk.toString());
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : 0);
        resolve();
      }),
    );
  }

  get hasExited(): boolean {
    return this.exitCode !== null;
  }

  /** `POST /api/publish`; throws unless the server answers 201. */
  async publish(topic: string, text: string): Promise<Published> {
    const res = await this.postPublish(topic, text);
    const body = await res.text();
    if (res.status !== 201) {
      throw new Error(`publish ${topic} ${JSON.stringify(text)}: HTTP ${res.status} ${body}`);
    }
    return JSON.parse(body) as Published;
  }

  /** `POST /api/publish` without judging the answer. */
  postPublish(topic: string, text: string): Promise<Response> {
    return fetch(`${this.url}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ topic, text }),
    });
  }

  /** SIGTERM, then SIGKILL if it has not stopped within the timeout. */
  async stop(timeoutMs = 7000): Promise<void> {
    if (!this.hasExited) {
      this.child.kill('SIGTERM');
      const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs));
      if ((await Promise.race([this.exited, timer])) === 'timeout') {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    if (this.ownDataDir) rmSync(this.ownDataDir, { recursive: true, force: true });
  }

  /** Resolves when the port accepts connections; rejects if the process dies first. */
  async waitReady(port: number, timeoutMs = 15000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.hasExited) {
        throw new Error(`server exited with ${this.exitCode} before listening:\n${this.logs.join('')}`);
      }
      if (await canConnect(port)) return;
      await new Promise((r) => setTimeout(r, 25)); // polling interval, not an assertion
    }
    throw new Error(`server did not listen on ${port} within ${timeoutMs} ms:\n${this.logs.join('')}`);
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export async function startServer(options: ServerOptions = {}): Promise<Server> {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`no server binary at ${SERVER_BIN}: run \`cargo leptos build\` or set SERVER_BIN`);
  }
  if (!existsSync(path.join(SITE_ROOT, 'pkg'))) {
    throw new Error(`no client files in ${SITE_ROOT}/pkg: run \`cargo leptos build\` or set SITE_ROOT`);
  }
  let lastError: unknown;
  // Another process may take the port between choosing and binding it: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    // The default folder, beside the binary, would be shared by every test and every run.
    const ownDataDir = options.dataDir ? undefined : mkdtempSync(path.join(os.tmpdir(), 'sse-live-e2e-data-'));
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      LEPTOS_SITE_ROOT: SITE_ROOT,
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      EVENTS_TICK: options.tick ?? 'off',
      RUST_LOG: process.env.RUST_LOG ?? 'info',
      EVENTS_DATA_DIR: options.dataDir ?? ownDataDir!,
      ...(options.pageRows !== undefined ? { EVENTS_PAGE_ROWS: String(options.pageRows) } : {}),
      ...(options.topics !== undefined ? { EVENTS_TOPICS: options.topics } : {}),
      ...(options.maxText !== undefined ? { EVENTS_MAX_TEXT: String(options.maxText) } : {}),
      ...options.env,
    };
    // Variables IIS would set would override the address: never inherit them.
    delete env.ASPNETCORE_PORT;
    delete env.HTTP_PLATFORM_PORT;
    delete env.ASPNETCORE_APPL_PATH;
    const child = spawn(SERVER_BIN, [], { env, cwd: END2END_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new Server(`http://127.0.0.1:${port}`, child, ownDataDir);
    try {
      await server.waitReady(port);
      return server;
    } catch (e) {
      lastError = e;
      await server.stop();
    }
  }
  throw lastError;
}

/**
 * Checks once that the binary and the site belong together: every `/pkg/` file the rendered
 * page names must exist. A server built by plain `cargo build`/`cargo test` (without
 * cargo-leptos' compile-time `LEPTOS_OUTPUT_NAME`) asks for `pkg/<name>_bg.wasm`, which
 * cargo-leptos does not produce; without this check every browser test would fail on a
 * dead client instead of saying why.
 */
export async function checkSite(): Promise<void> {
  const server = await startServer();
  try {
    const html = await (await fetch(`${server.url}/`)).text();
    const names = new Set<string>();
    for (const m of html.matchAll(/(?:href|src)="([^"]*\/pkg\/[^"]+)"/g)) names.add(m[1]);
    const m = html.match(/\(\s*"([^"]*)",\s*"([^"]+)",\s*"([^"]+)",\s*"([^"]+)",/);
    if (m) {
      names.add(`${m[1]}/${m[2]}/${m[3]}.js`);
      names.add(`${m[1]}/${m[2]}/${m[4]}.wasm`);
    }
    if (names.size === 0) throw new Error(`the page names no /pkg/ files:\n${html.slice(0, 2000)}`);
    for (const name of names) {
      const res = await fetch(`${server.url}${name}`);
      await res.arrayBuffer();
      if (res.status !== 200) {
        throw new Error(
          `${SERVER_BIN} renders a page that loads ${name}, which ${SITE_ROOT} does not serve ` +
            `(HTTP ${res.status}). Was the server built by \`cargo leptos build\` together with this site? ` +
            '(A plain `cargo build`/`cargo test` builds a server that asks for `<name>_bg.wasm`.)',
        );
      }
    }
  } finally {
    await server.stop();
  }
}

type WorkerFixtures = {
  siteCheck: void;
};

type Fixtures = {
  /** Settings for this test's server; set with `test.use({ serverOptions: {...} })`. */
  serverOptions: ServerOptions;
  /** Console messages (regexps) a test expects and allows. */
  allowedConsoleErrors: RegExp[];
  server: Server;
  consoleGuard: void;
};

export const test = base.extend<Fixtures, WorkerFixtures>({
  siteCheck: [
    async ({}, use) => {
      await checkSite();
      await use();
    },
    { scope: 'worker', auto: true },
  ],

  serverOptions: [{}, { option: true }],
  allowedConsoleErrors: [[], { option: true }],

  server: async ({ serverOptions }, use, testInfo) => {
    const server = await startServer(serverOptions);
    await use(server);
    await server.stop();
    if (testInfo.status !== testInfo.expectedStatus) {
      await testInfo.attach('server.log', { body: server.logs.join(''), contentType: 'text/plain' });
    }
  },

  // Every page goes to this test's server.
  baseURL: async ({ server }, use) => {
    await use(server.url);
  },

  consoleGuard: [
    async ({ page, allowedConsoleErrors }, use) => {
      const problems: string[] = [];
      page.on('console', (msg) => {
        if (msg.type() !== 'error') return;
        const text = msg.text();
        const where = msg.location();
        // The app ships no favicon (public/ is empty); the browser's own request for one is
        // not the page's error.
        if (where.url.endsWith('/favicon.ico')) return;
        if (allowedConsoleErrors.some((re) => re.test(text))) return;
        problems.push(`console.error: ${text} (${where.url}:${where.lineNumber})`);
      });
      page.on('pageerror', (err) => problems.push(`pageerror: ${err.stack ?? err.message}`));
      page.on('dialog', async (dialog) => {
        problems.push(`dialog (${dialog.type()}): ${dialog.message()}`);
        await dialog.dismiss();
      });
      await use();
      expect(problems, 'the page logged errors').toEqual([]);
    },
    { auto: true },
  ],
});

export { expect };

/** Loads the page and waits until the client has hydrated and the stream is confirmed. */
export async function openLive(page: Page): Promise<void> {
  await page.goto('/');
  await expect(page.getByTestId('status')).toHaveText('live');
}

/** Median, p95, min and max, rounded to 0.01. */
export function stats(values: number[]) {
  const s = [...values].sort((a, b) => a - b);
  const rank = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  const round = (v: number) => Math.round(v * 100) / 100;
  const mid = s.length / 2;
  const median = s.length % 2 ? s[Math.floor(mid)] : (s[mid - 1] + s[mid]) / 2;
  return { median: round(median), p95: round(rank(0.95)), min: round(s[0]), max: round(s.at(-1)!) };
}

/** `data-id`s of the rows in the list, top to bottom. */
export function rowIds(page: Page): Promise<number[]> {
  return page
    .locator('ol[data-testid=events] > li.event')
    .evaluateAll((rows) => rows.map((r) => Number(r.getAttribute('data-id'))));
}

/** The row of one event. */
export function row(page: Page, id: number) {
  return page.locator(`ol[data-testid=events] > li.event[data-id="${id}"]`);
}
