// sockpit browser entry: picks the page module from <body data-page="…">.
import { keepSessionWhileActive } from './lib/activity';
import { startClock } from './lib/clock';
import { connect } from './lib/socket';
import { adminDevicesPage, adminUsersPage } from './pages/admin';
import { apiKeysPage } from './pages/apikeys';
import { loginPage, setupPage } from './pages/auth';
import { dashboardPage } from './pages/dashboard';
import { devicePage } from './pages/device';

function start(): void {
  document.documentElement.classList.add('js');
  startClock();
  switch (document.body.dataset.page) {
    case 'dashboard':
      keepSessionWhileActive();
      dashboardPage(connect());
      break;
    case 'device':
      keepSessionWhileActive();
      devicePage(connect());
      break;
    case 'admin-devices':
      adminDevicesPage();
      break;
    case 'admin-users':
      adminUsersPage();
      break;
    case 'api-keys':
      apiKeysPage();
      break;
    case 'login':
      loginPage();
      break;
    case 'setup':
      setupPage();
      break;
    default:
      break;
  }
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
