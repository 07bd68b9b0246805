/** What the page shows a person who just added a device: the firmware's config and a simulator line. */

/** The firmware's config.h lines for a new device (esp32/sockpit-device/config.example.h). */
export function firmwareSnippet(id: string, token: string, host: string, port: number): string {
  return [
    `#define SERVER_HOST "${host}"`,
    `#define SERVER_PORT ${port}`,
    `#define DEVICE_ID "${id}"`,
    `#define DEVICE_TOKEN "${token}"`,
  ].join('\n');
}

export function simulateLine(id: string, token: string, host: string, port: number): string {
  return `npx sockpit simulate --id ${id} --token ${token} --host ${host} --port ${port}`;
}
