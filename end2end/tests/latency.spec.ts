// Publish-to-row time, measured in the page: `performance.now()` before the page's own
// `fetch('POST /api/publish')`, and again when a MutationObserver sees the row in the list
// (and at the next animation frame, when it can be painted). One clock, no test-runner hops.
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test, expect, openLive, RESULTS_DIR, stats } from './server';

const EVENTS = 20;

interface Sample {
  id: number;
  /** POST sent until its 201 arrived. */
  response_ms: number;
  /** POST sent until the row was in the DOM. */
  row_ms: number;
  /** POST sent until the first animation frame after that. */
  frame_ms: number;
  /** The page's own figure: browser clock minus the server's send time. */
  data_delay_ms: number;
}

test('publish → row visible latency', async ({ page, server }) => {
  await openLive(page);
  const samples: Sample[] = [];
  for (let i = 0; i < EVENTS; i++) {
    const text = `latency probe ${i} ${Date.now()}`;
    const sample = await page.evaluate(async (text): Promise<Sample> => {
      const list = document.querySelector('ol[data-testid=events]')!;
      const find = () =>
        Array.from(list.querySelectorAll('li.event')).find((li) => li.querySelector('.text')?.textContent === text);
      let observer!: MutationObserver;
      const inDom = new Promise<number>((resolve) => {
        observer = new MutationObserver(() => {
          if (find()) resolve(performance.now());
        });
        observer.observe(list, { childList: true, subtree: true, characterData: true });
      });
      const t0 = performance.now();
      const res = await fetch('/api/publish', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ topic: 'chat', text }),
      });
      const t1 = performance.now();
      const body = await res.json();
      const timeout = new Promise<number>((_, reject) =>
        setTimeout(() => reject(new Error(`row for ${text} not seen in 5 s`)), 5000),
      );
      const t2 = await Promise.race([inDom, timeout]);
      observer.disconnect();
      const t3 = await new Promise<number>((r) => requestAnimationFrame(() => r(performance.now())));
      return {
        id: body.id,
        response_ms: t1 - t0,
        row_ms: t2 - t0,
        frame_ms: t3 - t0,
        data_delay_ms: Number(find()!.getAttribute('data-delay')),
      };
    }, text);
    samples.push(sample);
  }

  const result = {
    what: 'POST /api/publish from the page until the row is in the list (performance.now in the page)',
    server: process.env.SERVER_BIN ?? '../target/debug/server',
    events: EVENTS,
    publish_to_row_ms: stats(samples.map((s) => s.row_ms)),
    publish_to_frame_ms: stats(samples.map((s) => s.frame_ms)),
    publish_response_ms: stats(samples.map((s) => s.response_ms)),
    data_delay_ms: stats(samples.map((s) => s.data_delay_ms)),
    measured_at: new Date().toISOString(),
    samples,
  };
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(path.join(RESULTS_DIR, 'latency.json'), JSON.stringify(result, null, 2) + '\n');
  const f = (s: { median: number; p95: number }) => `median ${s.median} ms, p95 ${s.p95} ms`;
  console.log(
    `publish → row (${EVENTS} events): ${f(result.publish_to_row_ms)}; ` +
      `→ next frame: ${f(result.publish_to_frame_ms)}; POST answered: ${f(result.publish_response_ms)}; ` +
      `data-delay: ${f(result.data_delay_ms)}`,
  );

  expect(samples).toHaveLength(EVENTS);
  expect(new Set(samples.map((s) => s.id)).size).toBe(EVENTS);
  for (const s of samples) {
    expect(s.row_ms).toBeGreaterThan(0);
    expect(s.row_ms).toBeLessThan(2000);
    expect(Number.isFinite(s.data_delay_ms)).toBe(true);
  }
});
