// A tiny HTTP proxy to put between the browser and the server, to play what sits in front of
// the app in production: an IIS application pool that recycles (503 for a while), a proxy that
// holds a stream (the socket stays open, nothing passes). It streams: every chunk is written
// as it arrives, nothing is buffered.

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

interface Stream {
  res: http.ServerResponse;
  upstream: http.ClientRequest;
  held: boolean;
}

export class Proxy {
  /** `http://127.0.0.1:<port>` */
  url = '';
  /** When each answer the proxy made up itself was sent (Date.now()), in order. */
  readonly failures: { at: number; status: number }[] = [];
  /** When each request for the stream arrived (Date.now()). */
  readonly streamRequests: number[] = [];
  /** When each held stream was closed by the browser (Date.now()). */
  readonly heldClosed: number[] = [];
  private armed: number[] = [];
  private readonly streams = new Set<Stream>();
  private readonly server: http.Server;

  private constructor(private target: URL) {
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  static async start(targetUrl: string): Promise<Proxy> {
    const proxy = new Proxy(new URL(targetUrl));
    await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.url = `http://127.0.0.1:${(proxy.server.address() as AddressInfo).port}`;
    return proxy;
  }

  /** New requests go to `targetUrl` from now on (a recycle: the new process on its own port). */
  retarget(targetUrl: string): void {
    this.target = new URL(targetUrl);
  }

  /** The next `count` requests for the stream get `status` (with an HTML-ish body) instead. */
  failNext(count: number, status = 503): void {
    for (let i = 0; i < count; i++) this.armed.push(status);
  }

  /** Ends every open stream abruptly, as a recycled worker process would. */
  cutStreams(): void {
    for (const s of this.streams) {
      s.upstream.destroy();
      s.res.destroy();
    }
    this.streams.clear();
  }

  /** The streams open now stop passing bytes (their sockets stay open); new ones pass. */
  holdStreams(): void {
    for (const s of this.streams) s.held = true;
  }

  get openStreams(): number {
    return this.streams.size;
  }

  async stop(): Promise<void> {
    this.cutStreams();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const isStream = (req.url ?? '').split('?')[0].endsWith('/api/events');
    if (isStream) {
      this.streamRequests.push(Date.now());
      const status = this.armed.shift();
      if (status !== undefined) {
        this.failures.push({ at: Date.now(), status });
        const body = status === 204 ? undefined : `<h1>${status}</h1><p>The application is recycling.</p>`;
        res.writeHead(status, body ? { 'content-type': 'text/html' } : {});
        res.end(body);
        return;
      }
    }
    const upstream = http.request(
      {
        host: this.target.hostname,
        port: this.target.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        res.flushHeaders();
        const entry: Stream | undefined = isStream ? { res, upstream, held: false } : undefined;
        if (entry) this.streams.add(entry);
        up.on('data', (chunk: Buffer) => {
          if (!entry?.held) res.write(chunk);
        });
        up.on('end', () => {
          if (entry) this.streams.delete(entry);
          res.end();
        });
        up.on('error', () => res.destroy());
      },
    );
    upstream.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(502);
        res.end();
      } else {
        res.destroy();
      }
    });
    res.on('close', () => {
      for (const s of this.streams) {
        if (s.res === res) {
          if (s.held) this.heldClosed.push(Date.now());
          this.streams.delete(s);
        }
      }
      upstream.destroy();
    });
    req.pipe(upstream);
  }
}

/** Open streams as the server last logged them (`open=N` on `stream opened`/`stream closed`). */
export function serverOpenStreams(logs: string[]): number {
  const lines = logs.join('').split('\n');
  let open = 0;
  for (const line of lines) {
    if (!/stream (opened|closed)/.test(line)) continue;
    const m = line.match(/\bopen=(\d+)/);
    if (m) open = Number(m[1]);
  }
  return open;
}

/** How many `stream opened` lines the server has logged. */
export function serverStreamsOpened(logs: string[]): number {
  return logs.join('').split('\n').filter((l) => /stream opened/.test(l)).length;
}
