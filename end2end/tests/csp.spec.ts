// The page works under its own Content-Security-Policy (a per-response nonce for the hydration
// script, `connect-src 'self'`), and nothing it does trips it.
import { test, expect } from './server';

test('the live page runs under its CSP without a single violation', async ({ page, server }) => {
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { __csp: string[] }).__csp = seen;
    document.addEventListener('securitypolicyviolation', (e) =>
      seen.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  const response = await page.goto('/');
  const csp = response?.headers()['content-security-policy'] ?? '';
  expect(csp).toContain("connect-src 'self';");
  expect(csp).toMatch(/script-src 'self' 'nonce-[A-Za-z0-9_-]+' 'wasm-unsafe-eval'/);
  await expect(page.getByTestId('status')).toHaveText('live');
  // Exercise what the page does: the stream, the form (a fetch), the chart.
  const p = await server.publish('chat', 'under the policy');
  await expect(page.locator(`li.event[data-id="${p.id}"]`)).toHaveCount(1);
  await page.getByTestId('publish-text').fill('from the form');
  await page.getByTestId('publish-submit').click();
  await expect(page.getByTestId('publish-result')).toContainText('published');
  const violations = await page.evaluate(() => (window as unknown as { __csp: string[] }).__csp);
  expect(violations).toEqual([]);
});
