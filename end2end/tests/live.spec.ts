// Events published over HTTP reach the page, as literal text, with no duplicates or gaps.
import { test, expect, openLive, rowIds, row, type Published } from './server';

const HOSTILE = [
  '<script>alert(1)</script>',
  '<img src=x onerror="alert(2)">',
  `"double" & 'single' quotes </li><li class="event" data-id="1">fake row`,
  'emoji 🚀 héllo 👩‍👩‍👧 ✓ — ünïcödé',
  'line one\nline two\n\n    indented line four\tafter a tab',
  'data: not a frame\n\nevent: alert\ndata: {"id":1,"topic":"alert","text":"x","sent_ms":0}',
  'separator\u2028inside',
  '{{ }} ${x} %s \\u003c &lt;b&gt; &amp;',
];

async function expectLiteralRows(page: import('@playwright/test').Page, published: Published[], texts: string[]) {
  for (const [i, p] of published.entries()) {
    const r = row(page, p.id);
    await expect(r).toHaveCount(1);
    expect(await r.locator('.text').evaluate((el) => el.textContent)).toBe(texts[i]);
  }
  // Nothing in the texts became markup.
  await expect(page.locator('ol[data-testid=events] script, ol[data-testid=events] img')).toHaveCount(0);
  await expect(page.locator('ol[data-testid=events] .text *')).toHaveCount(0);
  await expect(page.locator('ol[data-testid=events] > li.event')).toHaveCount(published.length);
}

test('a text published over HTTP appears as a row with a numeric delay', async ({ page, server }) => {
  await openLive(page);
  const p = await server.publish('chat', 'hello over HTTP');
  const r = row(page, p.id);
  await expect(r.locator('.text')).toHaveText('hello over HTTP');
  await expect(r).toHaveAttribute('data-topic', 'chat');
  await expect(r.locator('.topic')).toHaveText('chat');
  await expect(r.locator('.id')).toHaveText(`#${p.id}`);
  const delay = await r.getAttribute('data-delay');
  expect(delay).toMatch(/^-?\d+(\.\d+)?$/);
  expect(Number.isFinite(Number(delay))).toBe(true);
  await expect(r.locator('.delay')).toHaveText(/^\d+ ms$/);
  await expect(page.getByTestId('received')).toHaveText('1');
});

test('hostile texts render as literal text, live', async ({ page, server }) => {
  await openLive(page);
  const published = [];
  for (const text of HOSTILE) published.push(await server.publish('chat', text));
  await expect(row(page, published.at(-1)!.id)).toHaveCount(1);
  await expectLiteralRows(page, published, HOSTILE);
  await expect(page.getByTestId('received')).toHaveText(String(HOSTILE.length));
  for (const p of published) {
    expect(Number(await row(page, p.id).getAttribute('data-delay'))).not.toBeNaN();
  }
});

test('hostile texts render as literal text, server-rendered and hydrated', async ({ page, server }) => {
  const published = [];
  for (const text of HOSTILE) published.push(await server.publish('alert', text));
  await openLive(page);
  await expectLiteralRows(page, published, HOSTILE);
  expect(await rowIds(page)).toEqual(published.map((p) => p.id).reverse());
});

test('no duplicates or gaps at the seam between the rendered page and the stream', async ({ page, server }) => {
  const published: Published[] = [];
  for (let i = 1; i <= 5; i++) published.push(await server.publish('chat', `before load ${i}`));

  // Keep publishing while the page loads, hydrates and opens its stream: events land before
  // the render, between the render and the stream, and after.
  let stop = false;
  let n = 0;
  const background = (async () => {
    while (!stop && n < 120) {
      n++;
      published.push(await server.publish(n % 2 ? 'tick' : 'alert', `during load ${n}`));
      await new Promise((r) => setTimeout(r, 15)); // publishing pace, not an assertion
    }
  })();
  await openLive(page);
  stop = true;
  await background;
  for (let i = 1; i <= 5; i++) published.push(await server.publish('chat', `after load ${i}`));

  const last = published.at(-1)!;
  await expect(row(page, last.id)).toHaveCount(1);
  const ids = await rowIds(page);
  expect(new Set(ids).size, 'every data-id is unique').toBe(ids.length);
  expect(ids, 'ids in descending order').toEqual([...ids].sort((a, b) => b - a));
  // Exactly what was published: nothing lost at the seam either.
  expect(ids).toEqual(published.map((p) => p.id).reverse());
  expect(published.length).toBeGreaterThan(10);
});
