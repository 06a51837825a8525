// The publish form, and the API's refusals.
import { test, expect, openLive, rowIds, row } from './server';

test('the form publishes and the row appears', async ({ page }) => {
  await openLive(page);
  await page.getByTestId('publish-topic').selectOption('alert');
  await page.getByTestId('publish-text').fill('Disk <b>90%</b> full');
  await page.getByTestId('publish-submit').click();

  const result = page.getByTestId('publish-result');
  await expect(result).toHaveText(/^published #\d+$/);
  const id = Number((await result.textContent())!.replace(/\D/g, ''));
  const r = row(page, id);
  await expect(r.locator('.text')).toHaveText('Disk <b>90%</b> full');
  await expect(r).toHaveAttribute('data-topic', 'alert');
  expect(await rowIds(page)).toEqual([id]);
});

test.describe('refusals', () => {
  test.use({
    serverOptions: { maxText: 16 },
    // A refused form post answers with an error status, which Chromium logs.
    allowedConsoleErrors: [/Failed to load resource: the server responded with a status of (400|500)/],
  });

  test('a text over the limit shows the server error and publishes nothing', async ({ page, server }) => {
    await openLive(page);
    await page.getByTestId('publish-text').fill('x'.repeat(17));
    await page.getByTestId('publish-submit').click();
    const result = page.getByTestId('publish-result');
    await expect(result).toContainText('text is longer than 16 bytes');
    await expect(result).toHaveClass(/\berror\b/);
    // Proof that nothing was published: the next event is the only row.
    const next = await server.publish('chat', 'next');
    await expect(row(page, next.id)).toHaveCount(1);
    expect(await rowIds(page)).toEqual([next.id]);
    await expect(page.getByTestId('status')).toHaveText('live');
  });

  test('an empty text is refused by the server even past the browser check', async ({ page, server }) => {
    await openLive(page);
    // The input is `required`; a client that skips that check still gets the server's answer.
    await page.getByTestId('publish-text').evaluate((el) => el.removeAttribute('required'));
    await page.getByTestId('publish-submit').click();
    const result = page.getByTestId('publish-result');
    await expect(result).toContainText('text must not be empty');
    await expect(result).toHaveClass(/\berror\b/);
    // Then a valid one replaces the error.
    await page.getByTestId('publish-text').fill('ok now');
    await page.getByTestId('publish-submit').click();
    await expect(result).toHaveText(/^published #\d+$/);
    await expect(page.locator('li.event .text')).toHaveText(['ok now']);
  });

  test('POST /api/publish refuses bad requests with a JSON error', async ({ server }) => {
    const cases: [string, string, number, RegExp][] = [
      ['chat', '', 400, /text must not be empty/],
      ['chat', 'x'.repeat(17), 400, /longer than 16 bytes/],
      ['nope', 'hi', 400, /unknown topic 'nope'/],
      ['a b', 'hi', 400, /topic contains ' '/],
    ];
    for (const [topic, text, status, message] of cases) {
      const res = await server.postPublish(topic, text);
      expect(res.status, `${topic} ${text}`).toBe(status);
      expect((await res.json()).error).toMatch(message);
    }
    const res = await fetch(`${server.url}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"topic":"chat"}',
    });
    expect(res.status).toBe(422);
  });
});
