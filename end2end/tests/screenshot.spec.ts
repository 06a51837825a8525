// Screenshots of a populated page, for the docs (copied from end2end/results/ by hand).
import * as path from 'node:path';
import { test, expect, openLive, row, RESULTS_DIR, type Server } from './server';

test.use({ serverOptions: { tick: '700ms' } });

// No emoji: this machine has no emoji font, and they would show as empty boxes.
const BEFORE: [string, string][] = [
  ['chat', 'Good morning! Is the deploy still on for 10:00?'],
  ['alert', 'Disk usage on db-2 above 85 %'],
  ['chat', 'Yes — rolling out region by region.\nEU first, then US.'],
  ['alert', 'Error rate on checkout 2.4 % (threshold 1 %)'],
];
const AFTER: [string, string][] = [
  ['chat', 'Rolled back checkout to v41, watching the graphs.'],
  ['alert', 'Latency p95 back under 120 ms'],
  ['chat', 'Nice work, everyone!'],
  ['alert', 'Certificate for api.example.test expires in 14 days'],
];

async function populate(page: import('@playwright/test').Page, server: Server) {
  for (const [topic, text] of BEFORE) await server.publish(topic, text);
  await openLive(page);
  let last = 0;
  for (const [topic, text] of AFTER) last = (await server.publish(topic, text)).id;
  await expect(row(page, last)).toHaveCount(1);
  await page.getByTestId('publish-topic').selectOption('chat');
  await page.getByTestId('publish-text').fill('EU done, starting US.');
  await page.getByTestId('publish-submit').click();
  await expect(page.getByTestId('publish-result')).toHaveText(/^published #\d+$/);
  // Some ticks arrived live and the rate counter has run at least once.
  await expect(page.locator('li.event[data-topic=tick]:not([data-delay=""])').nth(2)).toBeAttached();
  await expect(page.getByTestId('rate')).not.toHaveText('0');
}

test('desktop screenshot', async ({ page, server }) => {
  await page.setViewportSize({ width: 1200, height: 800 });
  await populate(page, server);
  await page.screenshot({ path: path.join(RESULTS_DIR, 'screenshot.png'), animations: 'disabled' });
});

test('phone screenshot', async ({ page, server }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await populate(page, server);
  // Nothing wider than the screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  await page.screenshot({ path: path.join(RESULTS_DIR, 'screenshot-phone.png'), animations: 'disabled' });
});
