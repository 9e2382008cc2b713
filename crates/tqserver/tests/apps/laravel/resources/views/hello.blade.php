<!doctype html>
<title>Hello {{ $name }}</title>
<h1>Hello {{ $name }}</h1>
<ul>@foreach ($words as $word)<li>{{ $word }}</li>@endforeach</ul>
<p id="served">{{ $served }}</p>
<p id="pid">{{ $pid }}</p>
<p id="query">{{ json_encode($query) }}</p>
