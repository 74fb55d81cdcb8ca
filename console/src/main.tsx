import { render } from 'solid-js/web';
import App from './App';
import './styles.css';

render(() => <App />, document.getElementById('root')!);

// The service worker keeps the static shell for offline start and installation; it never
// caches API answers (public/sw.js is generated at build time: vite.config.ts).
if ('serviceWorker' in navigator && import.meta.env.PROD) {
  void navigator.serviceWorker.register('/sw.js', { scope: '/' });
}
