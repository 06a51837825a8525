// The server-rendered page and hydration.
import { test, expect, openLive, rowIds, row } from './server';

test.describe('without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('the server-rendered page already holds the recent events, newest first', async ({ page, server }) => {
    const published = [];
    for (const text of ['first', 'second', 'third']) {
      published.push(await server.publish('chat', text));
    }
    await page.goto('/');

    const ids = published.map((p) => p.id).reverse();
    expect(await rowIds(page)).toEqual(ids);
    const rows = page.locator('ol[data-testid=events] > li.event');
    await expect(rows.locator('.text')).toHaveText(['third', 'second', 'first']);
    await expect(rows.locator('.topic')).toHaveText(['chat', 'chat', 'chat']);
    await expect(rows.locator('.id')).toHaveText(ids.map((id) => `#${id}`));
    for (const id of ids) {
      await expect(row(page, id)).toHaveAttribute('data-topic', 'chat');
      // Rendered by the server: no delivery delay.
      await expect(row(page, id)).toHaveAttribute('data-delay', '');
    }
    // Nothing ran in the browser: the badge is as the server rendered it.
    await expect(page.getByTestId('status')).toHaveText('connecting');
    await expect(page.getByTestId('received')).toHaveText('0');
  });

  test('the publish form works as a plain form post', async ({ page, server }) => {
    await page.goto('/');
    await page.getByTestId('publish-topic').selectOption('alert');
    await page.getByTestId('publish-text').fill('posted without JavaScript');
    await page.getByTestId('publish-submit').click();
    // The form endpoint redirects back to the page, which now renders the new row.
    await expect(page.locator('li.event .text')).toHaveText(['posted without JavaScript']);
    await expect(page.locator('li.event')).toHaveAttribute('data-topic', 'alert');
    expect(server.hasExited).toBe(false);
  });

  test('a refused form post comes back with the error on the page', async ({ page }) => {
    await page.goto('/');
    // Skip the browser's `required` check to reach the server's own.
    await page.getByTestId('publish-text').evaluate((el) => el.removeAttribute('required'));
    await page.getByTestId('publish-submit').click();
    await expect(page.getByTestId('publish-result')).toContainText('text must not be empty');
    await expect(page.getByTestId('publish-result')).toHaveClass(/\berror\b/);
    await expect(page.locator('li.event')).toHaveCount(0);
  });
});

test('after hydration the badge says live and the rendered rows are kept', async ({ page, server }) => {
  const a = await server.publish('chat', 'before load');
  await page.goto('/');
  const badge = page.getByTestId('status');
  await expect(badge).toHaveText('live');
  await expect(badge).toHaveClass(/\bbadge\b/);
  await expect(badge).toHaveClass(/\blive\b/);
  expect(await rowIds(page)).toEqual([a.id]);
  await expect(page.getByTestId('received')).toHaveText('0');
  await expect(page.getByTestId('pause')).toHaveText('Pause');
});
