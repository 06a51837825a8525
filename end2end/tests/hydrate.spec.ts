// Navigation to hydrated-and-live, measured in the page on the page's own clock
// (`performance.now()`, whose zero is the start of the navigation): when the document's
// response ended, when the DOM was parsed, when the WebAssembly was instantiated, when the
// client had hydrated (it marks `<html data-sse-role>` as it starts its part in the stream),
// and when the badge said `live` (the server's `ready` event arrived on the stream).
// Each load is cold: a fresh browser context, nothing cached.
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test, expect, RESULTS_DIR, SERVER_BIN_PATH, IS_RELEASE, stats } from './server';

const LOADS = 5;

interface Marks {
  response_end_ms: number;
  dom_content_loaded_ms: number;
  wasm_instantiated_ms: number;
  hydrated_ms: number;
  live_ms: number;
}

test('navigation → hydrated and live', async ({ browser, server }) => {
  // Rows already in the page, as a page with a history has them.
  for (let i = 0; i < 20; i++) await server.publish('chat', `row ${i}`);
  const loads: Marks[] = [];
  for (let i = 0; i < LOADS; i++) {
    const context = await browser.newContext({ baseURL: server.url });
    await context.addInitScript(() => {
      const w = window as unknown as { __marks: Record<string, number> };
      const marks: Record<string, number> = {};
      w.__marks = marks;
      for (const name of ['instantiateStreaming', 'instantiate'] as const) {
        const original = WebAssembly[name] as (...args: unknown[]) => Promise<unknown>;
        (WebAssembly as unknown as Record<string, unknown>)[name] = async (...args: unknown[]) => {
          const result = await original.apply(WebAssembly, args);
          marks.wasm_instantiated_ms ??= performance.now();
          return result;
        };
      }
      const check = () => {
        if (marks.hydrated_ms === undefined && document.documentElement?.hasAttribute('data-sse-role')) {
          marks.hydrated_ms = performance.now();
        }
        const badge = document.querySelector('[data-testid=status]');
        if (marks.live_ms === undefined && badge?.textContent === 'live') {
          marks.live_ms = performance.now();
        }
      };
      new MutationObserver(check).observe(document, {
        subtree: true,
        childList: true,
        characterData: true,
        attributes: true,
      });
    });
    const page = await context.newPage();
    await page.goto('/');
    await expect(page.getByTestId('status')).toHaveText('live');
    const marks = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
      const m = (window as unknown as { __marks: Record<string, number> }).__marks;
      return {
        response_end_ms: nav.responseEnd,
        dom_content_loaded_ms: nav.domContentLoadedEventEnd,
        wasm_instantiated_ms: m.wasm_instantiated_ms,
        hydrated_ms: m.hydrated_ms,
        live_ms: m.live_ms,
      };
    });
    await context.close();
    loads.push(marks);
  }

  const figure = (key: keyof Marks) => stats(loads.map((l) => l[key]));
  const result = {
    what: 'navigation start until the badge says live, cold loads (performance.now in the page)',
    server: SERVER_BIN_PATH,
    release: IS_RELEASE,
    loads: LOADS,
    live_ms: figure('live_ms'),
    hydrated_ms: figure('hydrated_ms'),
    wasm_instantiated_ms: figure('wasm_instantiated_ms'),
    dom_content_loaded_ms: figure('dom_content_loaded_ms'),
    response_end_ms: figure('response_end_ms'),
    measured_at: new Date().toISOString(),
    samples: loads,
  };
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    path.join(RESULTS_DIR, `hydrate-to-live-${IS_RELEASE ? 'release' : 'debug'}.json`),
    JSON.stringify(result, null, 2) + '\n',
  );
  const f = (s: { median: number; max: number }) => `median ${s.median} ms, max ${s.max} ms`;
  console.log(
    `navigation → live (${LOADS} cold loads): ${f(result.live_ms)}; hydrated ${f(result.hydrated_ms)}; ` +
      `wasm instantiated ${f(result.wasm_instantiated_ms)}; DOMContentLoaded ${f(result.dom_content_loaded_ms)}`,
  );

  for (const l of loads) {
    // Every mark was seen, in the order the page goes through them.
    expect(l.wasm_instantiated_ms).toBeGreaterThan(0);
    expect(l.hydrated_ms).toBeGreaterThanOrEqual(l.wasm_instantiated_ms);
    expect(l.live_ms).toBeGreaterThanOrEqual(l.hydrated_ms);
  }
});
